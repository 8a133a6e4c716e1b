"""Training: the data-parallel step, the loop and its hooks, checkpoints, preemption,
multi-process runtime and metric summaries."""
