"""Diffusion schedules and samplers, and sampling volumes from a checkpoint."""
