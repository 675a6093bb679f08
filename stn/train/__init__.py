"""Training: config and recipes, the loop, optimizers, precision, the alignment term,
run directories, checkpoints, the monitor and its trace."""
