"""Pictures: figures, the pose figure, the training animation, the architecture drawing."""
