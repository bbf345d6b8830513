/* Heat: one FTCS step on a box of a padded block, and the wall ghosts of a
   box.  Every cell is evaluated as ((sum_d c_d ((u[-1] + u[+1]) - 2 u)) + u)
   (constant coefficients) or as
   ((((t_0 + t_1) + t_2) + q) + u), t_d = k_d[i] (u[-1] - u) + k_d[i+1] (u[+1] - u)
   (variable: face coefficients k_d and source q, padded blocks), axes in
   order, exactly as the NumPy reference does, so the fields agree bit for
   bit.  Blocks are C-ordered with padded sizes n0 x n1 (x n2);
   boxes are [lo, hi) in padded indices.  One work item per cell, axis 0
   the slowest; the last global index runs along the contiguous axis. */

KERNEL void heat_step_2d(GLOBAL const real* RESTRICT src, GLOBAL real* RESTRICT dst, long n1,
                         long lo0, long lo1, long hi0, long hi1, real c0, real c1)
{
    long i = lo0 + GLOBAL_ID(1), j = lo1 + GLOBAL_ID(0);
    if (i >= hi0 || j >= hi1) return;
    long k = i * n1 + j;
    real u = src[k];
    real twice = u * (real)2.0;
    real acc = ((src[k - n1] + src[k + n1]) - twice) * c0;
    real term = ((src[k - 1] + src[k + 1]) - twice) * c1;
    acc = acc + term;
    dst[k] = acc + u;
}

KERNEL void heat_step_3d(GLOBAL const real* RESTRICT src, GLOBAL real* RESTRICT dst, long n1, long n2,
                         long lo0, long lo1, long lo2, long hi0, long hi1, long hi2, real c0, real c1, real c2)
{
    long i = lo0 + GLOBAL_ID(2), j = lo1 + GLOBAL_ID(1), l = lo2 + GLOBAL_ID(0);
    if (i >= hi0 || j >= hi1 || l >= hi2) return;
    long s0 = n1 * n2, k = (i * n1 + j) * n2 + l;
    real u = src[k];
    real twice = u * (real)2.0;
    real acc = ((src[k - s0] + src[k + s0]) - twice) * c0;
    real term = ((src[k - n2] + src[k + n2]) - twice) * c1;
    acc = acc + term;
    term = ((src[k - 1] + src[k + 1]) - twice) * c2;
    acc = acc + term;
    dst[k] = acc + u;
}

KERNEL void heat_step_var_2d(GLOBAL const real* RESTRICT src, GLOBAL real* RESTRICT dst, long n1,
                             long lo0, long lo1, long hi0, long hi1, GLOBAL const real* RESTRICT k0,
                             GLOBAL const real* RESTRICT k1, GLOBAL const real* RESTRICT q)
{
    long i = lo0 + GLOBAL_ID(1), j = lo1 + GLOBAL_ID(0);
    if (i >= hi0 || j >= hi1) return;
    long k = i * n1 + j;
    real u = src[k];
    real below = k0[k] * (src[k - n1] - u);
    real above = k0[k + n1] * (src[k + n1] - u);
    real acc = below + above;
    below = k1[k] * (src[k - 1] - u);
    above = k1[k + 1] * (src[k + 1] - u);
    real term = below + above;
    acc = acc + term;
    acc = acc + q[k];
    dst[k] = acc + u;
}

KERNEL void heat_step_var_3d(GLOBAL const real* RESTRICT src, GLOBAL real* RESTRICT dst, long n1, long n2,
                             long lo0, long lo1, long lo2, long hi0, long hi1, long hi2,
                             GLOBAL const real* RESTRICT k0, GLOBAL const real* RESTRICT k1,
                             GLOBAL const real* RESTRICT k2, GLOBAL const real* RESTRICT q)
{
    long i = lo0 + GLOBAL_ID(2), j = lo1 + GLOBAL_ID(1), l = lo2 + GLOBAL_ID(0);
    if (i >= hi0 || j >= hi1 || l >= hi2) return;
    long s0 = n1 * n2, k = (i * n1 + j) * n2 + l;
    real u = src[k];
    real below = k0[k] * (src[k - s0] - u);
    real above = k0[k + s0] * (src[k + s0] - u);
    real acc = below + above;
    below = k1[k] * (src[k - n2] - u);
    above = k1[k + n2] * (src[k + n2] - u);
    real term = below + above;
    acc = acc + term;
    below = k2[k] * (src[k - 1] - u);
    above = k2[k + 1] * (src[k + 1] - u);
    term = below + above;
    acc = acc + term;
    acc = acc + q[k];
    dst[k] = acc + u;
}

/* The ghost layer beyond one wall of a box: every cell of a face, given as
   a start and two strides (the face's own axes; the second may be empty),
   gets ghost = a edge + b (Dirichlet a = -1, b = 2 value: the face value is
   value; insulated Neumann a = 1, b = 0; see models/heat/operator.py).
   ``toward`` is the stride from a ghost to its edge cell. */
KERNEL void heat_wall(GLOBAL real* u, long start, long stride_a, long count_a, long stride_b, long count_b,
                      long toward, real a, real b)
{
    long p = GLOBAL_ID(1), r = GLOBAL_ID(0);
    if (p >= count_a || r >= count_b) return;
    long g = start + p * stride_a + r * stride_b;
    real edge = a * u[g + toward];
    u[g] = edge + b;
}

/* A wall's sums of its edge cells: sums[at + p sa + r sb] += u[start + p
   stride_a + r stride_b], the face's cells as heat_wall walks them (start
   is the first edge cell here). */
KERNEL void heat_edge_sum(GLOBAL const real* RESTRICT u, long start, long stride_a, long count_a, long stride_b,
                          long count_b, GLOBAL real* RESTRICT sums, long at, long sa, long sb)
{
    long p = GLOBAL_ID(1), r = GLOBAL_ID(0);
    if (p >= count_a || r >= count_b) return;
    sums[at + p * sa + r * sb] += u[start + p * stride_a + r * stride_b];
}
