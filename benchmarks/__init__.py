"""Speed and memory measurements (not needed to train): the jaxdet step harness and the
torchvision side it is compared with."""
