/* The CUDA n-body program's choices, read before nbody.h (the heat
   kernels are compiled apart, with --fmad=false): the hardware reciprocal
   square root (rsqrtf, one MUFU.RSQ, for float, with -ftz=true so that no
   subnormal scaling surrounds it; CUDA's rsqrt for double) in place of an
   IEEE 1 / sqrt; |d|^2 + eps2 summed from eps2 up, so that FMA contraction
   makes it three FMAs; and the pair loop unrolled so that the loop's own
   instructions are spread over several pairs.  The options are
   backends/cuda.py's NBODY_OPTIONS. */
#define NBODY_RSQRT(r2) rsqrt(r2)
#define NBODY_R2(dx, dy, dz, eps2) ((((eps2) + (dx) * (dx)) + (dy) * (dy)) + (dz) * (dz))
#define NBODY_UNROLL _Pragma("unroll 8")
