/* Reductions over a box of a padded block, so a diagnostics step brings
   back a few numbers per work group instead of the field: each group
   reduces its cells in local memory and writes one partial; the host adds
   the partials (in double, in group order). */

/* partial[g] = (sum, min, max, nonfinite count) of the group's cells; the
   box is m0 x m1 x m2 cells from (lo0, lo1, lo2), ``count`` of them (a 2-D
   block is one of 1 x n1 x n2); groups of GROUP work items. */
KERNEL void box_stats(GLOBAL const real* RESTRICT u, long n1, long n2, long lo0, long lo1, long lo2,
                      long m1, long m2, long count, GLOBAL double* RESTRICT partial)
{
    LOCAL double s[4 * GROUP];
    long t = GLOBAL_ID(0);
    int l = LOCAL_ID(0), size = GROUP;
    double v = 0.0, lo = 0.0, hi = 0.0, bad = 0.0;
    int live = t < count;
    if (live) {
        long c2 = t % m2, rest = t / m2, c1 = rest % m1, c0 = rest / m1;
        v = u[((lo0 + c0) * n1 + lo1 + c1) * n2 + lo2 + c2];
        lo = v;
        hi = v;
        bad = (v - v == 0.0) ? 0.0 : 1.0;
    }
    s[l] = v; s[size + l] = live ? lo : INFINITY; s[2 * size + l] = live ? hi : -INFINITY; s[3 * size + l] = bad;
    BARRIER;
    for (int step = size / 2; step > 0; step /= 2) {
        if (l < step) {
            s[l] += s[l + step];
            s[size + l] = fmin(s[size + l], s[size + l + step]);
            s[2 * size + l] = fmax(s[2 * size + l], s[2 * size + l + step]);
            s[3 * size + l] += s[3 * size + l + step];
        }
        BARRIER;
    }
    if (l == 0) {
        long g = GROUP_ID(0);
        partial[4 * g] = s[0];
        partial[4 * g + 1] = s[size];
        partial[4 * g + 2] = s[2 * size];
        partial[4 * g + 3] = s[3 * size];
    }
}

/* partial[g] = (sum of squares, largest magnitude) of the group's cells of
   u - (mode factor + background): the error against the decaying sine mode,
   whose ``mode`` is dense over the box (m0 x m1 x m2). */
KERNEL void box_error(GLOBAL const real* RESTRICT u, long n1, long n2, long lo0, long lo1, long lo2,
                      long m1, long m2, long count, GLOBAL const real* RESTRICT mode, real factor,
                      real background, GLOBAL double* RESTRICT partial)
{
    LOCAL double s[2 * GROUP];
    long t = GLOBAL_ID(0);
    int l = LOCAL_ID(0), size = GROUP;
    double e = 0.0;
    if (t < count) {
        long c2 = t % m2, rest = t / m2, c1 = rest % m1, c0 = rest / m1;
        real exact = mode[t] * factor;
        exact = exact + background;
        e = u[((lo0 + c0) * n1 + lo1 + c1) * n2 + lo2 + c2] - exact;
    }
    s[l] = e * e;
    s[size + l] = fabs(e);
    BARRIER;
    for (int step = size / 2; step > 0; step /= 2) {
        if (l < step) {
            s[l] += s[l + step];
            s[size + l] = fmax(s[size + l], s[size + l + step]);
        }
        BARRIER;
    }
    if (l == 0) {
        long g = GROUP_ID(0);
        partial[2 * g] = s[0];
        partial[2 * g + 1] = s[size];
    }
}
