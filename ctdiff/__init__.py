"""ctdiff: synthetic CT with 3D diffusion models — generate, measure, look and judge."""

__version__ = "0.1.0"
