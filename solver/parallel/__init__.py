"""Parallel core: MPI start-up, Cartesian decomposition, halo exchange."""
