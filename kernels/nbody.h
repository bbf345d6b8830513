/* N-body: softened gravity of a block of sources on a block of targets,
   one work item per target, sources staged through local (shared) memory
   a tile at a time (GPU Gems 3, ch. 31).  Tiles are cut at multiples of
   TILE in global id (j0 is the sources' first id), as on every backend, and
   each tile's sum is added to the target's total on its own, so results do
   not depend on how bodies are split over ranks.  Positions are (n, 3)
   rows; ``real`` is float or double.

   A program may define, before this file, NBODY_RSQRT(r2) (1 / sqrt(r2);
   the CUDA n-body program uses the hardware reciprocal square root),
   NBODY_R2(dx, dy, dz, eps2) (|d|^2 + eps2, in an order of its choice) and
   NBODY_UNROLL (a pragma that unrolls the pair loop); by default the
   pairs round like the NumPy reference.

   The pair loop has no branch, select or id compare: a pair at one point
   (no softening) makes the tile's sum not finite, and only then is the tile
   summed again with such pairs left out and counted (the target itself, at
   a known place in the tile, not counted). */

#ifndef NBODY_RSQRT
#define NBODY_RSQRT(r2) ((real)1 / SQRT(r2))
#endif
#ifndef NBODY_R2
#define NBODY_R2(dx, dy, dz, eps2) ((dx) * (dx) + (dy) * (dy) + (dz) * (dz) + (eps2))
#endif
#ifndef NBODY_UNROLL
#define NBODY_UNROLL
#endif

DEVICE long tile_end(long j0, long a, long nj)
{
    long b = (j0 + a) / TILE * TILE + TILE - j0;
    return b < nj ? b : nj;
}

/* Where the t-th tile of a block of nj sources from global id j0 starts. */
DEVICE long tile_start(long j0, long t, long nj)
{
    long a = t == 0 ? 0 : (j0 / TILE + t) * TILE - j0;
    return a < nj ? a : nj;
}

/* The place of global id ``self`` among the ``count`` sources from global
   id ``first``, or -1 (so the pair loops compare 32-bit places, once a tile). */
DEVICE int place_in(long self, long first, long count)
{
    long q = self - first;
    return (q >= 0 && q < count) ? (int)q : -1;
}

/* Whether x, y and z are all finite. */
DEVICE int all_finite(real x, real y, real z)
{
    return (x - x) + (y - y) + (z - z) == (real)0;
}

/* Sources [a, b) into the local tile, shared out over the work group
   (every work item calls it: it ends in a barrier). */
DEVICE void stage_tile(LOCAL_PTR real* sx, LOCAL_PTR real* sy, LOCAL_PTR real* sz, LOCAL_PTR real* sm,
                       GLOBAL const real* RESTRICT xj, GLOBAL const real* RESTRICT mj, long a, long b)
{
    for (long q = LOCAL_ID(0); q < b - a; q += LOCAL_SIZE(0)) {
        sx[q] = xj[3 * (a + q)];
        sy[q] = xj[3 * (a + q) + 1];
        sz[q] = xj[3 * (a + q) + 2];
        sm[q] = mj[a + q];
    }
    BARRIER;
}

/* f += G sum_j m_j (x_j - p) / (|x_j - p|^2 + eps2)^(3/2) over sources
   [from, to) of the block (whole tiles), tile by tile; returns the pairs at
   one point that are not the target itself (global id ``self``).  Every
   work item of the group calls it (barriers). */
DEVICE int accel_range(LOCAL_PTR real* sx, LOCAL_PTR real* sy, LOCAL_PTR real* sz, LOCAL_PTR real* sm,
                       GLOBAL const real* RESTRICT xj, GLOBAL const real* RESTRICT mj, long nj, long j0,
                       long from, long to, real px, real py, real pz, long self, real eps2, real G,
                       real* f)
{
    int coincident = 0;
    for (long a = from; a < to;) {
        long b = tile_end(j0, a, nj);
        int count = (int)(b - a);
        stage_tile(sx, sy, sz, sm, xj, mj, a, b);
        real ax = (real)0, ay = (real)0, az = (real)0;
        NBODY_UNROLL
        for (int q = 0; q < count; q++) {
            real dx = sx[q] - px, dy = sy[q] - py, dz = sz[q] - pz;
            real r2 = NBODY_R2(dx, dy, dz, eps2);
            real inv = NBODY_RSQRT(r2);
            real w = sm[q] * inv * inv * inv;
            ax += w * dx;
            ay += w * dy;
            az += w * dz;
        }
        if (!all_finite(ax, ay, az)) {          /* a pair at one point, or an overflow: again, with care */
            int me = place_in(self, j0 + a, count);
            ax = (real)0; ay = (real)0; az = (real)0;
            for (int q = 0; q < count; q++) {
                real dx = sx[q] - px, dy = sy[q] - py, dz = sz[q] - pz;
                real r2 = NBODY_R2(dx, dy, dz, eps2);
                real inv = r2 > (real)0 ? NBODY_RSQRT(r2) : (real)0;
                real w = sm[q] * inv * inv * inv;
                coincident += (r2 == (real)0 && q != me) ? 1 : 0;
                ax += w * dx;
                ay += w * dy;
                az += w * dz;
            }
        }
        f[0] += G * ax;
        f[1] += G * ay;
        f[2] += G * az;
        BARRIER;
        a = b;
    }
    return coincident;
}

/* out[i] += G sum_j m_j (x_j - x_i) / (|x_j - x_i|^2 + eps2)^(3/2).  With
   eps2 == 0 a pair at one point gives nothing and is counted in bad[i]
   unless it is the target itself (ids i0 + i and j0 + j equal). */
KERNEL void nbody_accel(GLOBAL const real* RESTRICT xi, long ni, GLOBAL const real* RESTRICT xj,
                        GLOBAL const real* RESTRICT mj, long nj, long j0, long i0, real eps2, real G,
                        GLOBAL real* RESTRICT out, GLOBAL int* RESTRICT bad)
{
    LOCAL real sx[TILE], sy[TILE], sz[TILE], sm[TILE];
    long i = GLOBAL_ID(0);
    int live = i < ni;
    real px = live ? xi[3 * i] : (real)0, py = live ? xi[3 * i + 1] : (real)0, pz = live ? xi[3 * i + 2] : (real)0;
    real f[3] = {(real)0, (real)0, (real)0};
    int coincident = accel_range(sx, sy, sz, sm, xj, mj, nj, j0, 0, nj, px, py, pz, i0 + i, eps2, G, f);
    if (live) {
        out[3 * i] += f[0];
        out[3 * i + 1] += f[1];
        out[3 * i + 2] += f[2];
        bad[i] = coincident;
    }
}

/* nbody_accel split over the sources so that few targets still fill the
   device: group (g, p) takes targets first + g * TILE + [0, TILE) (of the
   ``count`` from ``first``) and the p-th run of ``span`` tiles of the
   sources, and writes its sums to part[(p * count + t) * 3 + c] and its
   pairs at one point to bads[p * count + t] (nbody_sum_parts adds the
   parts up, in order). */
KERNEL void nbody_accel_part(GLOBAL const real* RESTRICT xi, long ni, GLOBAL const real* RESTRICT xj,
                             GLOBAL const real* RESTRICT mj, long nj, long j0, long i0, real eps2, real G,
                             long first, long count, long span, GLOBAL real* RESTRICT part,
                             GLOBAL int* RESTRICT bads)
{
    LOCAL real sx[TILE], sy[TILE], sz[TILE], sm[TILE];
    long t = GLOBAL_ID(0), i = first + t, p = GROUP_ID(1);
    int live = t < count && i < ni;
    real px = live ? xi[3 * i] : (real)0, py = live ? xi[3 * i + 1] : (real)0, pz = live ? xi[3 * i + 2] : (real)0;
    real f[3] = {(real)0, (real)0, (real)0};
    int coincident = accel_range(sx, sy, sz, sm, xj, mj, nj, j0, tile_start(j0, p * span, nj),
                                 tile_start(j0, (p + 1) * span, nj), px, py, pz, i0 + i, eps2, G, f);
    if (live) {
        part[3 * (p * count + t)] = f[0];
        part[3 * (p * count + t) + 1] = f[1];
        part[3 * (p * count + t) + 2] = f[2];
        bads[p * count + t] = coincident;
    }
}

/* out[(first + t) * width + c] = the sum over p = 0, 1, ... of
   part[(p * count + t) * width + c], and bad[first + t] likewise from bads:
   the parts of nbody_accel_part or nbody_accel_jerk_part, added in order. */
KERNEL void nbody_sum_parts(GLOBAL const real* RESTRICT part, GLOBAL const int* RESTRICT bads, long parts,
                            long first, long count, long width, GLOBAL real* RESTRICT out,
                            GLOBAL int* RESTRICT bad)
{
    long t = GLOBAL_ID(0);
    if (t < count) {
        for (long c = 0; c < width; c++) {
            real s = (real)0;
            for (long p = 0; p < parts; p++)
                s += part[(p * count + t) * width + c];
            out[(first + t) * width + c] = s;
        }
        int n = 0;
        for (long p = 0; p < parts; p++)
            n += bads[p * count + t];
        bad[first + t] = n;
    }
}

/* phi[i] = -G sum_{j != i} m_j / sqrt(|x_j - x_i|^2 + eps2), in double;
   the self-pair is left out by id. */
KERNEL void nbody_potential(GLOBAL const real* RESTRICT xi, long ni, GLOBAL const real* RESTRICT xj,
                            GLOBAL const real* RESTRICT mj, long nj, long j0, long i0, real eps2, real G,
                            GLOBAL double* RESTRICT phi)
{
    LOCAL real sx[TILE], sy[TILE], sz[TILE], sm[TILE];
    long i = GLOBAL_ID(0);
    int live = i < ni;
    double px = live ? xi[3 * i] : 0.0, py = live ? xi[3 * i + 1] : 0.0, pz = live ? xi[3 * i + 2] : 0.0;
    double total = 0.0;
    for (long a = 0; a < nj;) {
        long b = tile_end(j0, a, nj);
        int count = (int)(b - a), me = place_in(i0 + i, j0 + a, count);
        stage_tile(sx, sy, sz, sm, xj, mj, a, b);
        double s = 0.0;
        for (int q = 0; q < count; q++) {
            double dx = sx[q] - px, dy = sy[q] - py, dz = sz[q] - pz;
            double r2 = dx * dx + dy * dy + dz * dz + (double)eps2;
            s += (r2 > 0.0 && q != me) ? (double)sm[q] / SQRT(r2) : 0.0;
        }
        total -= (double)G * s;
        BARRIER;
        a = b;
    }
    if (live) phi[i] += total;
}

/* Velocities of sources [a, b) into the local tile (every work item calls it). */
DEVICE void stage_velocities(LOCAL_PTR real* su, LOCAL_PTR real* sv, LOCAL_PTR real* sw,
                             GLOBAL const real* RESTRICT vj, long a, long b)
{
    for (long q = LOCAL_ID(0); q < b - a; q += LOCAL_SIZE(0)) {
        su[q] = vj[3 * (a + q)];
        sv[q] = vj[3 * (a + q) + 1];
        sw[q] = vj[3 * (a + q) + 2];
    }
    BARRIER;
}

/* One tile's force and jerk sums on a target at p with velocity u: the
   tile's six sums into s; returns the pairs at one point that are not the
   target itself (at place ``me`` of the tile, or -1).  As in accel_range,
   the pair loop has no branch: a pair at one point makes a sum not finite
   and the tile is summed again with care. */
DEVICE int jerk_tile(LOCAL_PTR real* sx, LOCAL_PTR real* sy, LOCAL_PTR real* sz, LOCAL_PTR real* sm,
                     LOCAL_PTR real* su, LOCAL_PTR real* sv, LOCAL_PTR real* sw, int count, real px, real py,
                     real pz, real qu, real qv, real qw, int me, real eps2, real* s)
{
    real ax = (real)0, ay = (real)0, az = (real)0, jx = (real)0, jy = (real)0, jz = (real)0;
    NBODY_UNROLL
    for (int q = 0; q < count; q++) {
        real dx = sx[q] - px, dy = sy[q] - py, dz = sz[q] - pz;
        real du = su[q] - qu, dv = sv[q] - qv, dw = sw[q] - qw;
        real r2 = NBODY_R2(dx, dy, dz, eps2);
        real inv = NBODY_RSQRT(r2);
        real inv2 = inv * inv;
        real w = sm[q] * inv * inv2;
        real rv = (real)3 * (dx * du + dy * dv + dz * dw) * inv2;
        ax += w * dx;
        ay += w * dy;
        az += w * dz;
        jx += w * (du - rv * dx);
        jy += w * (dv - rv * dy);
        jz += w * (dw - rv * dz);
    }
    int coincident = 0;
    if (!all_finite(ax, ay, az) || !all_finite(jx, jy, jz)) {
        ax = (real)0; ay = (real)0; az = (real)0; jx = (real)0; jy = (real)0; jz = (real)0;
        for (int q = 0; q < count; q++) {
            real dx = sx[q] - px, dy = sy[q] - py, dz = sz[q] - pz;
            real du = su[q] - qu, dv = sv[q] - qv, dw = sw[q] - qw;
            real r2 = NBODY_R2(dx, dy, dz, eps2);
            real inv = r2 > (real)0 ? NBODY_RSQRT(r2) : (real)0;
            real inv2 = inv * inv;
            real w = sm[q] * inv * inv2;
            real rv = (real)3 * (dx * du + dy * dv + dz * dw) * inv2;
            coincident += (r2 == (real)0 && q != me) ? 1 : 0;
            ax += w * dx;
            ay += w * dy;
            az += w * dz;
            jx += w * (du - rv * dx);
            jy += w * (dv - rv * dy);
            jz += w * (dw - rv * dz);
        }
    }
    s[0] = ax; s[1] = ay; s[2] = az; s[3] = jx; s[4] = jy; s[5] = jz;
    return coincident;
}

/* Force and jerk of sources [from, to) of the block (whole tiles), tile by
   tile, into f (acceleration, then jerk); every work item calls it. */
DEVICE int jerk_range(LOCAL_PTR real* sx, LOCAL_PTR real* sy, LOCAL_PTR real* sz, LOCAL_PTR real* sm,
                      LOCAL_PTR real* su, LOCAL_PTR real* sv, LOCAL_PTR real* sw, GLOBAL const real* RESTRICT xj,
                      GLOBAL const real* RESTRICT vj, GLOBAL const real* RESTRICT mj, long nj, long j0, long from,
                      long to, real px, real py, real pz, real qu, real qv, real qw, long self, real eps2,
                      real G, real* f)
{
    int coincident = 0;
    for (long a = from; a < to;) {
        long b = tile_end(j0, a, nj);
        real s[6];
        stage_tile(sx, sy, sz, sm, xj, mj, a, b);
        stage_velocities(su, sv, sw, vj, a, b);
        coincident += jerk_tile(sx, sy, sz, sm, su, sv, sw, (int)(b - a), px, py, pz, qu, qv, qw,
                                place_in(self, j0 + a, b - a), eps2, s);
        for (int c = 0; c < 6; c++)
            f[c] += G * s[c];
        BARRIER;
        a = b;
    }
    return coincident;
}

/* Force and jerk in one pass, for Hermite: with dx = x_j - x_i, dv = v_j - v_i,
   r2 = |dx|^2 + eps2, acc[i] += G sum_j m_j dx / r2^(3/2) and
   jerk[i] += G sum_j m_j (dv - 3 (dx . dv / r2) dx) / r2^(3/2).  Targets are
   any bodies (ids: their global ids); with eps2 == 0 a pair at one point
   gives nothing and is counted in bad[i] unless it is the target itself. */
KERNEL void nbody_accel_jerk(GLOBAL const real* RESTRICT xi, GLOBAL const real* RESTRICT vi,
                             GLOBAL const long* RESTRICT ids, long ni, GLOBAL const real* RESTRICT xj,
                             GLOBAL const real* RESTRICT vj, GLOBAL const real* RESTRICT mj, long nj, long j0,
                             real eps2, real G, GLOBAL real* RESTRICT acc, GLOBAL real* RESTRICT jerk,
                             GLOBAL int* RESTRICT bad)
{
    LOCAL real sx[TILE], sy[TILE], sz[TILE], sm[TILE], su[TILE], sv[TILE], sw[TILE];
    long i = GLOBAL_ID(0);
    int live = i < ni;
    real px = live ? xi[3 * i] : (real)0, py = live ? xi[3 * i + 1] : (real)0, pz = live ? xi[3 * i + 2] : (real)0;
    real qu = live ? vi[3 * i] : (real)0, qv = live ? vi[3 * i + 1] : (real)0, qw = live ? vi[3 * i + 2] : (real)0;
    real f[6] = {(real)0, (real)0, (real)0, (real)0, (real)0, (real)0};
    int coincident = jerk_range(sx, sy, sz, sm, su, sv, sw, xj, vj, mj, nj, j0, 0, nj, px, py, pz, qu, qv, qw,
                                live ? ids[i] : -1, eps2, G, f);
    if (live) {
        for (int c = 0; c < 3; c++) {
            acc[3 * i + c] += f[c];
            jerk[3 * i + c] += f[3 + c];
        }
        bad[i] = coincident;
    }
}

/* nbody_accel_jerk split over the sources (see nbody_accel_part): group
   (g, p) writes its six sums (acceleration, then jerk) to
   part[(p * count + t) * 6 + c] and its pairs at one point to
   bads[p * count + t]. */
KERNEL void nbody_accel_jerk_part(GLOBAL const real* RESTRICT xi, GLOBAL const real* RESTRICT vi,
                                  GLOBAL const long* RESTRICT ids, long ni, GLOBAL const real* RESTRICT xj,
                                  GLOBAL const real* RESTRICT vj, GLOBAL const real* RESTRICT mj, long nj, long j0,
                                  real eps2, real G, long first, long count, long span,
                                  GLOBAL real* RESTRICT part, GLOBAL int* RESTRICT bads)
{
    LOCAL real sx[TILE], sy[TILE], sz[TILE], sm[TILE], su[TILE], sv[TILE], sw[TILE];
    long t = GLOBAL_ID(0), i = first + t, p = GROUP_ID(1);
    int live = t < count && i < ni;
    real px = live ? xi[3 * i] : (real)0, py = live ? xi[3 * i + 1] : (real)0, pz = live ? xi[3 * i + 2] : (real)0;
    real qu = live ? vi[3 * i] : (real)0, qv = live ? vi[3 * i + 1] : (real)0, qw = live ? vi[3 * i + 2] : (real)0;
    real f[6] = {(real)0, (real)0, (real)0, (real)0, (real)0, (real)0};
    int coincident = jerk_range(sx, sy, sz, sm, su, sv, sw, xj, vj, mj, nj, j0, tile_start(j0, p * span, nj),
                                tile_start(j0, (p + 1) * span, nj), px, py, pz, qu, qv, qw, live ? ids[i] : -1,
                                eps2, G, f);
    if (live) {
        for (int c = 0; c < 6; c++)
            part[6 * (p * count + t) + c] = f[c];
        bads[p * count + t] = coincident;
    }
}
