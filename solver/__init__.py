"""solver: SPMD heat diffusion and n-body on MPI."""
__version__ = "0.1.0"
