"""CT data: volumes and their I/O, HU facts, resampling, preparing a dataset, the training dataset, phantoms, random body crops from a block of slices."""
