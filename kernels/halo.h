/* Halo regions: a box of a padded block (a face, an edge or a corner
   region) to and from a contiguous buffer in C order, so that one copy, or
   one message of a CUDA-aware MPI, moves it.  The box is m0 x m1 x m2 cells
   from (lo0, lo1, lo2) of a block with padded sizes n0 x n1 x n2 (a 2-D
   block is one of 1 x n1 x n2), ``count`` cells in all. */

DEVICE long box_index(long t, long n1, long n2, long lo0, long lo1, long lo2, long m1, long m2)
{
    long c2 = t % m2, rest = t / m2, c1 = rest % m1, c0 = rest / m1;
    return ((lo0 + c0) * n1 + lo1 + c1) * n2 + lo2 + c2;
}

KERNEL void halo_pack(GLOBAL const real* RESTRICT u, long n1, long n2, long lo0, long lo1, long lo2,
                      long m1, long m2, long count, GLOBAL real* RESTRICT buf)
{
    long t = GLOBAL_ID(0);
    if (t < count) buf[t] = u[box_index(t, n1, n2, lo0, lo1, lo2, m1, m2)];
}

KERNEL void halo_unpack(GLOBAL real* RESTRICT u, long n1, long n2, long lo0, long lo1, long lo2,
                        long m1, long m2, long count, GLOBAL const real* RESTRICT buf)
{
    long t = GLOBAL_ID(0);
    if (t < count) u[box_index(t, n1, n2, lo0, lo1, lo2, m1, m2)] = buf[t];
}
