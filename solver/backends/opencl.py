"""OpenCL backend through PyOpenCL: the device kernels of ``kernels/``
(the same source the CUDA backend compiles), run on any OpenCL device;
in CI on PoCL's CPU device.

Heat state lives on the device for the whole run (``DeviceArray``): halo
regions are gathered by a kernel and travel device -> host buffer -> MPI ->
device on a second queue, while the interior kernels run on the first
(launches return at once, so the host drives MPI meanwhile), and a
diagnostics step brings back a few numbers per work group.  Heat on the
device is bitwise equal to the NumPy reference (``FP_CONTRACT OFF``, the
same operation order).  N-body state stays on the host (its transfer is
O(n) against O(n^2) work per step); the force kernels sum in the same fixed
tiles of global ids as every backend and agree with the reference to
round-off.

One context per process on the device picked by node-local rank (ranks
sharing a node spread over its devices, in the order ``solver info`` lists
them), or by ``backend.device``.
"""
from __future__ import annotations

import numpy as np

from . import device
from .numpy_ import hermite_correct, hermite_predict  # noqa: F401  (n-body state stays on the host)

name = "opencl"

try:
    import pyopencl as cl
    _IMPORT_ERROR = None
except ImportError as exc:          # the backend is optional: pip install .[opencl]
    cl, _IMPORT_ERROR = None, exc

_state: dict = {}                   # context, queue, device, programs by real type


def _devices():
    found = []
    for platform in cl.get_platforms():
        try:
            found.extend(platform.get_devices())
        except cl.Error:            # a platform without devices
            continue
    return found


def available():
    if cl is None:
        return False, f"pyopencl is not installed ({_IMPORT_ERROR}); pip install .[opencl]"
    try:
        devices = _devices()
    except cl.Error as exc:
        return False, f"no OpenCL platform ({exc}); install an OpenCL driver (e.g. Debian's pocl-opencl-icd)"
    if not devices:
        return False, "no OpenCL device found"
    return True, ""


def bind(comm, wanted=-1):
    """Choose this rank's device (see device.choose) and create the context (collective)."""
    _context(device.choose(comm, wanted, len(_devices()), "OpenCL"))


def devices() -> list[str]:
    """Every OpenCL device, in the order backend.device counts them."""
    return [f"{d.name.strip()} ({d.platform.name.strip()}, {d.global_mem_size / 2**30:.1f} GiB, "
            f"{d.max_compute_units} compute units)" for d in _devices()]


def _context(index=None):
    """(context, compute queue).  Kernels that read halo cells wait for the
    halo copies queued since (see unpack): every use of the compute queue
    comes through here."""
    if "queue" in _state and _state["halo_in"]:
        cl.enqueue_barrier(_state["queue"], wait_for=_state["halo_in"])
        _state["halo_in"] = []
    if "queue" not in _state:
        found = _devices()
        chosen = found[(device.launcher_local_rank() if index is None else index) % len(found)]
        if not chosen.double_fp_config:
            from ..config import ConfigError
            raise ConfigError(f"backend.name: the OpenCL device {chosen.name} has no float64 support")
        ctx = cl.Context([chosen])
        # two in-order queues: kernels on one, halo traffic on the other, so
        # halo copies need not wait for the interior kernels queued before them
        _state.update(device=chosen, context=ctx, queue=cl.CommandQueue(ctx), copy=cl.CommandQueue(ctx),
                      programs={}, halo_in=[])
    return _state["context"], _state["queue"]


class _Kernels:
    """The kernels compiled for one ``real`` type, each retrieved once."""

    def __init__(self, program):
        self._program, self._found = program, {}

    def __getattr__(self, kernel):
        if kernel.startswith("_"):
            raise AttributeError(kernel)
        if kernel not in self._found:
            self._found[kernel] = cl.Kernel(self._program, kernel)
        return self._found[kernel]


def _program(real="double"):
    """The kernels compiled for ``real`` (once per process), and the queue."""
    ctx, queue = _context()
    if real not in _state["programs"]:
        from .. import kernels
        _state["programs"][real] = _Kernels(cl.Program(ctx, kernels.source("opencl", real)).build())
    return _state["programs"][real], queue


def device_copy(nbytes) -> float:
    """Seconds for one device-to-device copy of ``nbytes`` (the bandwidth bound of the bench)."""
    import time
    ctx, queue = _context()
    a, b = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, nbytes), cl.Buffer(ctx, cl.mem_flags.READ_WRITE, nbytes)
    cl.enqueue_copy(queue, b, a).wait()                    # first touch
    t0 = time.perf_counter()
    cl.enqueue_copy(queue, b, a).wait()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------
# arrays on the device
class DeviceArray:
    """A C-ordered array in a device buffer: what ``zeros`` and ``from_host`` return."""

    def __init__(self, shape, dtype=np.float64):
        ctx, _ = _context()
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize
        self.buffer = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, max(self.nbytes, self.dtype.itemsize))


def zeros(shape, dtype=np.float64) -> DeviceArray:
    out = DeviceArray(shape, dtype)
    _, queue = _context()
    cl.enqueue_fill_buffer(queue, out.buffer, np.zeros(1, out.dtype), 0, max(out.nbytes, out.dtype.itemsize))
    return out


def from_host(array) -> DeviceArray:
    array = np.ascontiguousarray(array)
    out = DeviceArray(array.shape, array.dtype)
    _, queue = _context()
    if array.size:
        cl.enqueue_copy(queue, out.buffer, array, is_blocking=True)
    return out


def to_host(array) -> np.ndarray:
    if isinstance(array, np.ndarray):
        return array
    out = np.empty(array.shape, array.dtype)
    _, queue = _context()
    if out.size:
        cl.enqueue_copy(queue, out, array.buffer, is_blocking=True)
    return out


def sync():
    """Wait until every queued kernel and copy has finished (for timings)."""
    if "queue" in _state:
        _state["copy"].finish()
        _context()[1].finish()


def halo_buffer(shape, dtype):
    """A host buffer for a halo region's messages."""
    return np.empty(shape, dtype)


_staging: dict = {}         # one device buffer per halo region size


def _stage(count, dtype):
    key = (count, np.dtype(dtype).str)
    if key not in _staging:
        _staging[key] = cl.Buffer(_state["context"], cl.mem_flags.READ_WRITE, max(1, count) * np.dtype(dtype).itemsize)
    return _staging[key]


def _each_cell(kernel, queue, count, *args, wait_for=None):
    from .. import kernels
    group = kernels.CONSTANTS["GROUP"]
    return kernel(queue, (max(1, -(-count // group)) * group,), (group,), *args, wait_for=wait_for)


def pack(array, where, out):
    """``out`` = ``array[where]``, on the copy queue: the halo_pack kernel
    (after the kernels that wrote ``array``) gathers the region into a
    contiguous device buffer, and one copy brings it to the host (waits)."""
    args, count = device.box3(array.shape, where)
    prg, queue = _program("double")
    written = cl.enqueue_marker(queue)
    stage = _stage(count, array.dtype)
    _each_cell(prg.halo_pack, _state["copy"], count, array.buffer, *args, stage, wait_for=[written])
    cl.enqueue_copy(_state["copy"], out, stage, is_blocking=True)


def unpack(buf, array, where):
    """``array[where]`` = ``buf``, on the copy queue: one copy to the device
    and the halo_unpack kernel; the compute queue waits for them before its
    next kernel (see _context).  ``buf`` is not refilled before the next
    ``pack``, which waits for the copy queue."""
    args, count = device.box3(array.shape, where)
    prg, _ = _program("double")
    stage = _stage(count, array.dtype)
    cl.enqueue_copy(_state["copy"], stage, buf, is_blocking=False)
    _state["halo_in"].append(_each_cell(prg.halo_unpack, _state["copy"], count, array.buffer, *args, stage))


# ----------------------------------------------------------------------------
# reductions: a few numbers per work group come back
def _reduce(kernel, array, box, width, *extra):
    from .. import kernels
    group = kernels.CONSTANTS["GROUP"]
    args, count = device.box3(array.shape, box)
    groups = max(1, -(-count // group))
    prg, queue = _program("double")
    partial = np.empty((groups, width))
    out = cl.Buffer(_state["context"], cl.mem_flags.WRITE_ONLY, partial.nbytes)
    getattr(prg, kernel)(queue, (groups * group,), (group,), array.buffer, *args, *extra, out)
    cl.enqueue_copy(queue, partial, out, is_blocking=True)
    return partial


box_stats, all_finite, box_error = device.reductions(_reduce)     # same contracts as numpy_'s


# ----------------------------------------------------------------------------
# heat
def heat_block(padded_shape, fields=0) -> int:
    """Steps per halo exchange: one kernel launch per step and level, so
    fusing buys fewer messages, not less memory traffic; two."""
    return 2


def _round_up(n, k):
    return -(-n // k) * k


def _launch_box(kernel, queue, lo, hi, *args):
    """``kernel`` over the box [lo, hi), the contiguous axis first in the NDRange."""
    sizes = [h - l for l, h in zip(lo, hi)][::-1]
    local = [min(64, _round_up(sizes[0], 8))] + [1] * (len(sizes) - 1)
    kernel(queue, [_round_up(s, g) for s, g in zip(sizes, local)], local, *args)


def _face_launch(cb, ca):
    local = (min(64, _round_up(cb, 8)), 1)
    return (_round_up(cb, local[0]), ca), local


def _walls(prg, queue, buf, shape, lo, hi, grow, walls):
    """Ghost layers beyond the wall sides of the box [lo, hi) (see device.wall_faces)."""
    for k, start, sa, ca, sb, cb, toward, *_ in device.wall_faces(shape, lo, hi, grow):
        prg.heat_wall(queue, *_face_launch(cb, ca), buf, *map(np.int64, (start, sa, ca, sb, cb, toward)),
                      *map(np.float64, walls[k]))


def _edge_sums(prg, queue, buf, shape, lo, hi, grow, sums):
    """Each wall's sums += its edge cells of the box [lo, hi)."""
    for k, start, sa, ca, sb, cb, toward, at, fa, fb in device.wall_faces(shape, lo, hi, grow):
        if sums[k] is not None:
            prg.heat_edge_sum(queue, *_face_launch(cb, ca), buf, *map(np.int64, (start + toward, sa, ca, sb, cb)),
                              sums[k].buffer, *map(np.int64, (at, fa, fb)))


_levels: dict = {}          # two scratch blocks per block shape for the intermediate levels


def heat_fused(src, dst, stencil, steps, lo, hi, grow):
    """Same contract as numpy_.heat_fused, one kernel launch per level (and
    one per wall face for its ghosts and for its sums), all queued (this
    returns before the device has finished).  Intermediate levels go to two
    scratch blocks, never to ``dst``, whose other boxes may already hold
    final values."""
    ndim = len(lo)
    if any(h <= l for l, h in zip(lo, hi)):
        return
    prg, queue = _program("double")
    shape = src.shape
    if steps > 1 and shape not in _levels:
        if len(_levels) > 4:
            _levels.clear()
        _levels[shape] = (DeviceArray(shape), DeviceArray(shape))
    if stencil.faces is None:
        kernel = prg.heat_step_2d if ndim == 2 else prg.heat_step_3d
        extra = [np.float64(x) for x in stencil.coeffs]
    else:
        kernel = prg.heat_step_var_2d if ndim == 2 else prg.heat_step_var_3d
        extra = [k.buffer for k in stencil.faces] + [stencil.source.buffer]
    sums = tuple(stencil.sums) + (None,) * (2 * ndim - len(stencil.sums))
    cur = src
    for s, blo, bhi in device.levels(lo, hi, grow, steps):
        _walls(prg, queue, cur.buffer, shape, blo, bhi, grow, stencil.walls)
        _edge_sums(prg, queue, cur.buffer, shape, lo, hi, grow, sums)
        out = dst if s == steps else _levels[shape][s % 2]
        args = [np.int64(n) for n in shape[1:]] + [np.int64(x) for x in (*blo, *bhi)] + extra
        _launch_box(kernel, queue, blo, bhi, cur.buffer, out.buffer, *args)
        cur = out


# ----------------------------------------------------------------------------
# n-body
def _nbody_inputs(xi, xj, mj):
    real, dtype = device.real_of(xi.dtype)
    prg, queue = _program(real)
    ctx = _state["context"]
    mf = cl.mem_flags

    def put(a):
        a = np.ascontiguousarray(a, dtype=dtype)
        return cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a if a.size else np.zeros(1, dtype))
    return prg, queue, ctx, dtype, put(xi), put(xj), put(mj)


def _groups(n):
    from .. import kernels
    tile = kernels.CONSTANTS["TILE"]
    return (_round_up(max(n, 1), tile),), (tile,)


def nbody_accel(xi, xj, mj, j0, eps2, G, out, i0=None):
    """Same contract as numpy_.nbody_accel."""
    if len(xi) == 0 or len(xj) == 0:
        return 0
    prg, queue, ctx, dtype, bx, bj, bm = _nbody_inputs(xi, xj, mj)
    acc = np.zeros((len(xi), 3), dtype)
    mf = cl.mem_flags
    bout = cl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=acc)
    bbad = cl.Buffer(ctx, mf.READ_WRITE, 4 * len(xi))
    first = -(2 ** 62) if i0 is None else i0           # disjoint ids: no self-pairs
    prg.nbody_accel(queue, *_groups(len(xi)), bx, np.int64(len(xi)), bj, bm, np.int64(len(xj)), np.int64(j0),
                    np.int64(first), dtype(eps2), dtype(G), bout, bbad)
    bad = np.empty(len(xi), np.int32)
    cl.enqueue_copy(queue, acc, bout)
    cl.enqueue_copy(queue, bad, bbad)
    with np.errstate(over="ignore", invalid="ignore"):       # an overflow is caught by the model's checks
        out += acc.astype(out.dtype, copy=False)
    return int(bad.sum())


def nbody_potential(xi, xj, mj, j0, i0, eps2, G):
    """Same contract as numpy_.nbody_potential."""
    phi = np.zeros(len(xi), dtype=np.float64)
    if len(xi) == 0 or len(xj) == 0:
        return phi
    prg, queue, ctx, dtype, bx, bj, bm = _nbody_inputs(xi, xj, mj)
    mf = cl.mem_flags
    bphi = cl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=phi)
    prg.nbody_potential(queue, *_groups(len(xi)), bx, np.int64(len(xi)), bj, bm, np.int64(len(xj)), np.int64(j0),
                        np.int64(i0), dtype(eps2), dtype(G), bphi)
    cl.enqueue_copy(queue, phi, bphi)
    return phi


def nbody_accel_jerk(xi, vi, ids, xj, vj, mj, j0, eps2, G, acc, jerk):
    """Same contract as numpy_.nbody_accel_jerk."""
    if len(xi) == 0 or len(xj) == 0:
        return 0
    prg, queue, ctx, dtype, bx, bj, bm = _nbody_inputs(xi, xj, mj)
    mf = cl.mem_flags

    def put(a, kind=dtype):
        return cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(a, dtype=kind))
    bv, bw, bids = put(vi), put(vj), put(ids, np.int64)
    sums = np.zeros((2, len(xi), 3), dtype)
    bsums = [cl.Buffer(ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=s) for s in sums]
    bbad = cl.Buffer(ctx, mf.READ_WRITE, 4 * len(xi))
    prg.nbody_accel_jerk(queue, *_groups(len(xi)), bx, bv, bids, np.int64(len(xi)), bj, bw, bm, np.int64(len(xj)),
                         np.int64(j0), dtype(eps2), dtype(G), *bsums, bbad)
    bad = np.empty(len(xi), np.int32)
    for s, b in zip(sums, bsums):
        cl.enqueue_copy(queue, s, b)
    cl.enqueue_copy(queue, bad, bbad)
    with np.errstate(over="ignore", invalid="ignore"):
        acc += sums[0].astype(acc.dtype, copy=False)
        jerk += sums[1].astype(jerk.dtype, copy=False)
    return int(bad.sum())
