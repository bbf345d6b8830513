/* The kernel dialect, as OpenCL C.  FP_CONTRACT off: a*b + c rounds like
   the NumPy reference (no fused multiply-add). */
#pragma OPENCL FP_CONTRACT OFF
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#define KERNEL __kernel
#define DEVICE static inline
#define GLOBAL __global
#define LOCAL __local
#define LOCAL_PTR __local
#define RESTRICT restrict
#define BARRIER barrier(CLK_LOCAL_MEM_FENCE)
#define GLOBAL_ID(d) ((long)get_global_id(d))
#define LOCAL_ID(d) ((int)get_local_id(d))
#define GROUP_ID(d) ((long)get_group_id(d))
#define LOCAL_SIZE(d) ((int)get_local_size(d))
#define SQRT sqrt
