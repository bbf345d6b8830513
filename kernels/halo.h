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

/* Many boxes of one block to and from one buffer, one after another in
   the order of the table: a whole halo exchange's regions in one launch.
   table[6 k .. 6 k + 5] = (lo0, lo1, lo2, m1, m2, first) of box k, whose
   cells are buf[first, first of box k + 1) (the last box's, up to total).
   One work item per cell. */
DEVICE long boxes_index(long t, long n1, long n2, GLOBAL const long* RESTRICT table, long nboxes)
{
    long k = 0;
    while (k + 1 < nboxes && table[6 * (k + 1) + 5] <= t) k++;
    GLOBAL const long* b = table + 6 * k;
    return box_index(t - b[5], n1, n2, b[0], b[1], b[2], b[3], b[4]);
}

KERNEL void halo_pack_boxes(GLOBAL const real* RESTRICT u, long n1, long n2, GLOBAL const long* RESTRICT table,
                            long nboxes, long total, GLOBAL real* RESTRICT buf)
{
    long t = GLOBAL_ID(0);
    if (t < total) buf[t] = u[boxes_index(t, n1, n2, table, nboxes)];
}

KERNEL void halo_unpack_boxes(GLOBAL real* RESTRICT u, long n1, long n2, GLOBAL const long* RESTRICT table,
                              long nboxes, long total, GLOBAL const real* RESTRICT buf)
{
    long t = GLOBAL_ID(0);
    if (t < total) u[boxes_index(t, n1, n2, table, nboxes)] = buf[t];
}
