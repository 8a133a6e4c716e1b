"""Head modules only (no losses, no post-processing): RetinaNet's towers, the YOLOX-style
decoupled head, SSD's per-level convs, Faster R-CNN's RPN and box head."""
