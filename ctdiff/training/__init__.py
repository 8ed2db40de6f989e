"""Training a model: the training loop and the run directory it writes."""
