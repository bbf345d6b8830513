/* N-body: softened gravity of a block of sources on a block of targets,
   one work item per target, sources staged through local (shared) memory
   a tile at a time (GPU Gems 3, ch. 31).  Tiles are cut at multiples of
   TILE in global id (j0 is the sources' first id), as on every backend, and
   each tile's sum is added to the target's total on its own, so results do
   not depend on how bodies are split over ranks.  Positions are (n, 3)
   rows; ``real`` is float or double. */

DEVICE long tile_end(long j0, long a, long nj)
{
    long b = (j0 + a) / TILE * TILE + TILE - j0;
    return b < nj ? b : nj;
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
    real fx = (real)0, fy = (real)0, fz = (real)0;
    int coincident = 0;
    for (long a = 0; a < nj;) {
        long b = tile_end(j0, a, nj);
        stage_tile(sx, sy, sz, sm, xj, mj, a, b);
        real ax = (real)0, ay = (real)0, az = (real)0;
        for (long q = 0; q < b - a; q++) {
            real dx = sx[q] - px, dy = sy[q] - py, dz = sz[q] - pz;
            real r2 = dx * dx + dy * dy + dz * dz + eps2;
            real inv = r2 > (real)0 ? (real)1 / SQRT(r2) : (real)0;
            real w = sm[q] * inv * inv * inv;
            coincident += (r2 == (real)0 && j0 + a + q != i0 + i) ? 1 : 0;
            ax += w * dx;
            ay += w * dy;
            az += w * dz;
        }
        fx += G * ax;
        fy += G * ay;
        fz += G * az;
        BARRIER;
        a = b;
    }
    if (live) {
        out[3 * i] += fx;
        out[3 * i + 1] += fy;
        out[3 * i + 2] += fz;
        bad[i] = coincident;
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
        stage_tile(sx, sy, sz, sm, xj, mj, a, b);
        double s = 0.0;
        for (long q = 0; q < b - a; q++) {
            double dx = sx[q] - px, dy = sy[q] - py, dz = sz[q] - pz;
            double r2 = dx * dx + dy * dy + dz * dz + (double)eps2;
            s += (r2 > 0.0 && j0 + a + q != i0 + i) ? (double)sm[q] / SQRT(r2) : 0.0;
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
    long self = live ? ids[i] : -1;
    real fx = (real)0, fy = (real)0, fz = (real)0, gx = (real)0, gy = (real)0, gz = (real)0;
    int coincident = 0;
    for (long a = 0; a < nj;) {
        long b = tile_end(j0, a, nj);
        stage_tile(sx, sy, sz, sm, xj, mj, a, b);
        stage_velocities(su, sv, sw, vj, a, b);
        real ax = (real)0, ay = (real)0, az = (real)0, jx = (real)0, jy = (real)0, jz = (real)0;
        for (long q = 0; q < b - a; q++) {
            real dx = sx[q] - px, dy = sy[q] - py, dz = sz[q] - pz;
            real du = su[q] - qu, dv = sv[q] - qv, dw = sw[q] - qw;
            real r2 = dx * dx + dy * dy + dz * dz + eps2;
            real inv = r2 > (real)0 ? (real)1 / SQRT(r2) : (real)0;
            real inv2 = inv * inv;
            real w = sm[q] * inv * inv2;
            real rv = (real)3 * (dx * du + dy * dv + dz * dw) * inv2;
            coincident += (r2 == (real)0 && j0 + a + q != self) ? 1 : 0;
            ax += w * dx;
            ay += w * dy;
            az += w * dz;
            jx += w * (du - rv * dx);
            jy += w * (dv - rv * dy);
            jz += w * (dw - rv * dz);
        }
        fx += G * ax;
        fy += G * ay;
        fz += G * az;
        gx += G * jx;
        gy += G * jy;
        gz += G * jz;
        BARRIER;
        a = b;
    }
    if (live) {
        acc[3 * i] += fx;
        acc[3 * i + 1] += fy;
        acc[3 * i + 2] += fz;
        jerk[3 * i] += gx;
        jerk[3 * i + 1] += gy;
        jerk[3 * i + 2] += gz;
        bad[i] = coincident;
    }
}
