"""The network (3D U-Net) and its checkpoints (weights + config)."""
