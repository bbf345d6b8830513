/* The kernel dialect, as CUDA.  Heat kernels are compiled with --fmad=false,
   so a*b + c rounds like the NumPy reference (no fused multiply-add); the
   n-body kernels, checked to a tolerance rather than bit for bit, with FMA and
   the hardware reciprocal square root (NBODY_OPTIONS in backends/cuda.py). */
#define KERNEL extern "C" __global__
#define DEVICE __device__ static inline
#define GLOBAL
#define LOCAL __shared__
#define LOCAL_PTR
#define RESTRICT __restrict__
#define BARRIER __syncthreads()
#define GLOBAL_ID(d) (d == 0 ? (long)blockIdx.x * blockDim.x + threadIdx.x : \
                      d == 1 ? (long)blockIdx.y * blockDim.y + threadIdx.y : (long)blockIdx.z * blockDim.z + threadIdx.z)
#define LOCAL_ID(d) ((int)(d == 0 ? threadIdx.x : d == 1 ? threadIdx.y : threadIdx.z))
#define GROUP_ID(d) ((long)(d == 0 ? blockIdx.x : d == 1 ? blockIdx.y : blockIdx.z))
#define LOCAL_SIZE(d) ((int)(d == 0 ? blockDim.x : d == 1 ? blockDim.y : blockDim.z))
#define SQRT sqrt
