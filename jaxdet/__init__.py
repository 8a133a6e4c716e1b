"""jaxdet: object detectors as pure JAX functions, trained by backpropagation.

The package imports no TensorFlow: training, evaluation and prediction run where only
JAX is installed (input through Grain, TensorBoard events through tensorboardX). Only
preparing a TFDS catalogue dataset (its own code) needs TensorFlow.
"""

__version__ = "0.1.0"
