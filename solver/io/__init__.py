"""Output: parallel HDF5 checkpoints (and, later, sidecars and writers)."""
