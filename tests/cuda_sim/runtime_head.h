/* The simulated driver's view of CUDA C++, put before the kernel source:
   what nvcc would provide (qualifiers, built-in indices, intrinsics), for
   the host C++ compiler.  Every thread of a block runs on its own fiber;
   __syncthreads() hands control back to the block's scheduler, which
   resumes the threads (in a varying order) only when all of them have
   arrived.  __shared__ variables are function statics: one copy, shared by
   the threads of the block that runs (blocks run one after another). */
#include <cmath>
#include <cstdint>
#include <cstring>
#include <climits>
#include <cfloat>
#include <algorithm>

struct sim_dim3 { unsigned x, y, z; };
extern "C" sim_dim3 threadIdx, blockIdx, blockDim, gridDim;
extern "C" void sim_syncthreads(void);
static const int warpSize = 32;

#define __global__
#define __device__
#define __host__
#define __noinline__
#define __forceinline__ inline
#define __shared__ static
#define __constant__ static
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __syncthreads() sim_syncthreads()
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)

using std::sqrt; using std::fabs; using std::fmin; using std::fmax; using std::floor; using std::ceil;
using std::exp; using std::log; using std::pow; using std::fma; using std::isfinite; using std::isnan;
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
static inline float __fsqrt_rn(float x) { return std::sqrt(x); }
static inline double __dsqrt_rn(double x) { return std::sqrt(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline double __drcp_rn(double x) { return 1.0 / x; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
static inline float sqrtf_(float x) { return std::sqrt(x); }
template <class T> static inline T __ldg(const T* p) { return *p; }
/* Threads of a block never run at the same time here: an atomic is a plain read-modify-write. */
template <class T> static inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T> static inline T atomicMax(T* p, T v) { T old = *p; *p = old > v ? old : v; return old; }
template <class T> static inline T atomicMin(T* p, T v) { T old = *p; *p = old < v ? old : v; return old; }
template <class T> static inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T> static inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }
#line 1 "kernel source"
