"""CUDA backend through PyCUDA: the device kernels of ``kernels/``, the
same source the ``opencl`` backend runs (and CI runs on PoCL), compiled by
nvcc with ``--fmad=false`` so that the device rounds like the NumPy
reference, and with warnings as errors.

The design is the ``opencl`` backend's: heat state stays on the device
(``DeviceArray``), halo regions are gathered by a kernel into contiguous
device memory and copied asynchronously on a copy stream to page-locked
host buffers for MPI (or, with ``backend.gpu_aware_mpi``, handed to a
CUDA-aware MPI as device memory) while the interior kernels run on the
compute stream, which waits on an event for the received ghosts;
reductions bring back a few numbers; n-body state stays on the host.

One context per rank: the primary context of the device picked by
node-local rank among the visible ones (``CUDA_VISIBLE_DEVICES`` applies),
or ``backend.device``; never ``pycuda.autoinit``; it is popped at exit.
Without a driver or a device the backend says why and is not used.  Its
kernels run the code paths the ``opencl`` backend runs in CI, but this
module itself has not yet run on a GPU.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile

import numpy as np

from . import device
from .numpy_ import hermite_correct, hermite_predict  # noqa: F401  (n-body state stays on the host)

name = "cuda"
ARCHS = ("sm_80", "sm_90")                  # A100, H100/H200
OPTIONS = ("--fmad=false", "-Werror", "all-warnings")
_state: dict = {}


def _driver():
    import pycuda.driver as drv
    return drv


def available():
    try:
        drv = _driver()
    except ImportError as exc:
        if "libcuda" in str(exc):        # PyCUDA is there, the driver library is not
            return False, f"no CUDA driver ({exc})"
        return False, f"pycuda is not installed ({exc}); pip install .[cuda]"
    try:
        drv.init()
        count = drv.Device.count()
    except drv.Error as exc:
        return False, f"no usable CUDA driver ({exc})"
    if count == 0:
        return False, "no CUDA device is visible (CUDA_VISIBLE_DEVICES?)"
    return True, ""


# ----------------------------------------------------------------------------
# compiling
def nvcc() -> str | None:
    """The nvcc to use: on PATH, else under CUDA_HOME or CUDA_PATH."""
    found = shutil.which("nvcc")
    if found:
        return found
    for var in ("CUDA_HOME", "CUDA_PATH"):
        candidate = os.path.join(os.environ.get(var, ""), "bin", "nvcc")
        if os.environ.get(var) and os.access(candidate, os.X_OK):
            return candidate
    return None


class CompileError(RuntimeError):
    """nvcc refused a kernel source (its messages are in the text)."""


def compile_cubin(source: str, arch: str = "sm_90", options=OPTIONS) -> bytes:
    """The cubin of ``source`` (a whole program from ``kernels.source``) for
    ``arch``, by nvcc with ``options`` (this backend's, by default)."""
    compiler = nvcc()
    if compiler is None:
        raise CompileError("nvcc not found: put the CUDA toolkit's bin on PATH or set CUDA_HOME "
                           "(pip's cuda-toolkit[nvcc] brings one)")
    with tempfile.TemporaryDirectory(prefix="solver-nvcc-") as tmp:
        src, out = os.path.join(tmp, "kernels.cu"), os.path.join(tmp, "kernels.cubin")
        with open(src, "w", encoding="utf-8") as fh:
            fh.write(source)
        done = subprocess.run([compiler, "-cubin", f"-arch={arch}", *options, "-o", out, src],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise CompileError(f"nvcc -arch={arch} failed:\n{done.stdout}{done.stderr}")
        with open(out, "rb") as fh:
            return fh.read()


def _arch(gpu) -> str:
    major, minor = gpu.compute_capability()
    return f"sm_{major}{minor}"


# ----------------------------------------------------------------------------
# the context
def bind(comm, wanted=-1):
    """Pick this rank's device among the visible ones (see device.choose)
    and make its context current (collective)."""
    drv = _driver()
    drv.init()
    _context(device.choose(comm, wanted, drv.Device.count(), "CUDA"))


def devices() -> list[str]:
    """Every visible CUDA device, in the order backend.device counts them."""
    drv = _driver()
    drv.init()
    return [f"{d.name()} ({_arch(d)}, {d.total_memory() / 2**30:.1f} GiB)"
            for d in (drv.Device(i) for i in range(drv.Device.count()))]


def _context(index=None):
    if "device" not in _state:
        drv = _driver()
        drv.init()
        index = device.launcher_local_rank() if index is None else index
        chosen = drv.Device(index % drv.Device.count())
        context = chosen.retain_primary_context()
        context.push()
        atexit.register(_release)
        # heat kernels on one stream, halo traffic on another (both synchronise
        # with the legacy default stream, which the whole-array copies use)
        _state.update(device=chosen, context=context, modules={}, compute=drv.Stream(), copy=drv.Stream(),
                      halo_in=[])
    return _state["device"]


def forget():
    """Drop this process's context, streams, modules and buffers without
    touching the driver (for a test that swaps the driver underneath)."""
    _state.clear()
    _staging.clear()
    _levels.clear()


def _release():
    context = _state.pop("context", None)
    if context is not None:
        try:
            _driver().Context.pop()
        except Exception:            # noqa: BLE001 - at exit, the driver may already be gone
            pass


def device_copy(nbytes) -> float:
    """Seconds for one device-to-device copy of ``nbytes`` (the bandwidth bound of the bench)."""
    drv = _driver()
    _context()
    a, b = drv.mem_alloc(nbytes), drv.mem_alloc(nbytes)
    drv.memcpy_dtod(b, a, nbytes)
    start, end = drv.Event(), drv.Event()
    start.record()
    drv.memcpy_dtod(b, a, nbytes)
    end.record()
    end.synchronize()
    return end.time_since(start) / 1e3


# FP32 and FP64 lanes per SM by compute capability (NVIDIA's tables; an FMA is two flops)
_LANES = {(7, 0): (64, 32), (8, 0): (64, 32), (8, 6): (128, 2), (8, 9): (128, 2), (9, 0): (128, 64)}


def peak_flops(precision="float64") -> float:
    """This rank's device's peak flop rate (FMA = 2), 0 where the architecture is not in the table."""
    drv = _driver()
    gpu = _context()
    lanes = _LANES.get(gpu.compute_capability())
    if lanes is None:
        return 0.0
    sms = gpu.get_attribute(drv.device_attribute.MULTIPROCESSOR_COUNT)
    hz = gpu.get_attribute(drv.device_attribute.CLOCK_RATE) * 1e3
    return 2.0 * sms * hz * lanes[0 if precision == "float32" else 1]


class _Kernels:
    """The kernels compiled for one ``real`` type (PyCUDA caches the cubin on disk)."""

    def __init__(self, real):
        from pycuda.compiler import SourceModule

        from .. import kernels
        self._module = SourceModule(kernels.source("cuda", real), options=["--fmad=false"], no_extern_c=True,
                                    arch=_arch(_context()))
        self._found = {}

    def __getattr__(self, kernel):
        if kernel.startswith("_"):
            raise AttributeError(kernel)
        if kernel not in self._found:
            self._found[kernel] = self._module.get_function(kernel)
        return self._found[kernel]


def _program(real="double"):
    _context()
    if real not in _state["modules"]:
        _state["modules"][real] = _Kernels(real)
    return _state["modules"][real]


# ----------------------------------------------------------------------------
# arrays on the device
class DeviceArray:
    """A C-ordered array in device memory: what ``zeros`` and ``from_host`` return."""

    def __init__(self, shape, dtype=np.float64):
        _context()
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize
        self.buffer = _driver().mem_alloc(max(self.nbytes, self.dtype.itemsize))

    @property
    def __cuda_array_interface__(self):
        """What mpi4py reads to hand this memory to a CUDA-aware MPI."""
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (int(self.buffer), False), "version": 3}


def zeros(shape, dtype=np.float64) -> DeviceArray:
    out = DeviceArray(shape, dtype)
    _driver().memset_d8(out.buffer, 0, max(out.nbytes, 1))
    return out


def from_host(array) -> DeviceArray:
    array = np.ascontiguousarray(array)
    out = DeviceArray(array.shape, array.dtype)
    if array.size:
        _driver().memcpy_htod(out.buffer, array)
    return out


def to_host(array) -> np.ndarray:
    if isinstance(array, np.ndarray):
        return array
    out = np.empty(array.shape, array.dtype)
    if out.size:
        _driver().memcpy_dtoh(out, array.buffer)       # waits for the kernels before it
    return out


def sync():
    """Wait until every queued kernel and copy has finished (for timings)."""
    if "context" in _state:
        _driver().Context.synchronize()


def use_gpu_aware_mpi():
    """Halo messages go straight from and to device memory (the MPI library
    must be CUDA-aware; mpi4py takes ``__cuda_array_interface__`` objects)."""
    _state["gpu_aware"] = True


def halo_buffer(shape, dtype):
    """A halo region's message buffer: page-locked host memory (fast copies),
    or device memory with a CUDA-aware MPI."""
    if _state.get("gpu_aware"):
        return DeviceArray(shape, dtype)
    return _driver().pagelocked_empty(tuple(shape), dtype)


_staging: dict = {}


def _stage(count, dtype):
    key = (count, np.dtype(dtype).str)
    if key not in _staging:
        _staging[key] = _driver().mem_alloc(max(1, count) * np.dtype(dtype).itemsize)
    return _staging[key]


def _each_cell(kernel, stream, count, *args):
    from .. import kernels
    group = kernels.CONSTANTS["GROUP"]
    kernel(*args, block=(group, 1, 1), grid=(max(1, -(-count // group)), 1), stream=stream)


def _compute():
    """The heat kernels' stream; it first waits for the halo copies queued
    since its last use (see unpack)."""
    stream = _state["compute"]
    for event in _state["halo_in"]:
        stream.wait_for_event(event)
    _state["halo_in"] = []
    return stream


def pack(array, where, out):
    """``out`` = ``array[where]``, on the copy stream: the halo_pack kernel
    (after the kernels that wrote ``array``) gathers the region into
    contiguous device memory and an async copy brings it to the page-locked
    host buffer; with a CUDA-aware MPI ``out`` is device memory.  Returns
    when MPI may read ``out``; the interior kernels run on meanwhile."""
    drv = _driver()
    args, count = device.box3(array.shape, where)
    prg, copy = _program("double"), _state["copy"]
    written = drv.Event()
    written.record(_compute())
    copy.wait_for_event(written)
    if isinstance(out, DeviceArray):
        _each_cell(prg.halo_pack, copy, count, array.buffer, *args, out.buffer)
    else:
        stage = _stage(count, array.dtype)
        _each_cell(prg.halo_pack, copy, count, array.buffer, *args, stage)
        drv.memcpy_dtoh_async(out, stage, copy)
    copy.synchronize()


def unpack(buf, array, where):
    """``array[where]`` = ``buf`` (page-locked host memory, or device memory
    with a CUDA-aware MPI), on the copy stream; the compute stream waits for
    it before its next kernel (see _compute)."""
    drv = _driver()
    args, count = device.box3(array.shape, where)
    prg, copy = _program("double"), _state["copy"]
    if isinstance(buf, DeviceArray):
        _each_cell(prg.halo_unpack, copy, count, array.buffer, *args, buf.buffer)
    else:
        stage = _stage(count, array.dtype)
        drv.memcpy_htod_async(stage, buf, copy)
        _each_cell(prg.halo_unpack, copy, count, array.buffer, *args, stage)
    done = drv.Event()
    done.record(copy)
    _state["halo_in"].append(done)


# ----------------------------------------------------------------------------
# reductions
def _reduce(kernel, array, box, width, *extra):
    from .. import kernels
    drv = _driver()
    group = kernels.CONSTANTS["GROUP"]
    args, count = device.box3(array.shape, box)
    groups = max(1, -(-count // group))
    partial = np.empty((groups, width))
    stream = _compute()
    getattr(_program("double"), kernel)(array.buffer, *args, *extra, drv.Out(partial),
                                        block=(group, 1, 1), grid=(groups, 1), stream=stream)
    stream.synchronize()
    return partial


box_stats, all_finite, box_error = device.reductions(_reduce)     # same contracts as numpy_'s


# ----------------------------------------------------------------------------
# heat
def heat_block(padded_shape, fields=0) -> int:
    """Steps per halo exchange: each level is one kernel launch over the
    whole box (no reuse from cache), so fusing saves messages only; two."""
    return 2


def _launch_box(kernel, lo, hi, *args):
    sizes = [h - l for l, h in zip(lo, hi)][::-1] + [1] * (3 - len(lo))
    block = (min(128, sizes[0]), 1, 1)
    grid = (-(-sizes[0] // block[0]), sizes[1], sizes[2])
    kernel(*args, block=block, grid=grid, stream=_compute())


def _face_launch(cb, ca):
    block = (min(128, cb), 1, 1)
    return {"block": block, "grid": (-(-cb // block[0]), ca), "stream": _compute()}


def _walls(prg, buf, shape, lo, hi, grow, walls):
    """Ghost layers beyond the wall sides of the box [lo, hi) (see device.wall_faces)."""
    for k, start, sa, ca, sb, cb, toward, *_ in device.wall_faces(shape, lo, hi, grow):
        prg.heat_wall(buf, *map(np.int64, (start, sa, ca, sb, cb, toward)), *map(np.float64, walls[k]),
                      **_face_launch(cb, ca))


def _edge_sums(prg, buf, shape, lo, hi, grow, sums):
    """Each wall's sums += its edge cells of the box [lo, hi)."""
    for k, start, sa, ca, sb, cb, toward, at, fa, fb in device.wall_faces(shape, lo, hi, grow):
        if sums[k] is not None:
            prg.heat_edge_sum(buf, *map(np.int64, (start + toward, sa, ca, sb, cb)), sums[k].buffer,
                              *map(np.int64, (at, fa, fb)), **_face_launch(cb, ca))


_levels: dict = {}


def heat_fused(src, dst, stencil, steps, lo, hi, grow):
    """Same contract as numpy_.heat_fused (see the opencl backend: the same
    launches, intermediate levels in two scratch blocks)."""
    ndim = len(lo)
    if any(h <= l for l, h in zip(lo, hi)):
        return
    prg = _program("double")
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
        _walls(prg, cur.buffer, shape, blo, bhi, grow, stencil.walls)
        _edge_sums(prg, cur.buffer, shape, lo, hi, grow, sums)
        out = dst if s == steps else _levels[shape][s % 2]
        args = [np.int64(n) for n in shape[1:]] + [np.int64(x) for x in (*blo, *bhi)] + extra
        _launch_box(kernel, blo, bhi, cur.buffer, out.buffer, *args)
        cur = out


# ----------------------------------------------------------------------------
# n-body: state on the host.  The n-body kernels are a program of their own,
# compiled with FMA contraction, flush-to-zero and the hardware reciprocal
# square root (kernels/nbody_cuda.h): they need no bitwise equality with the
# reference (float64 agrees to 1e-12, float32 to the tolerance in
# docs/performance.md).  Per call the bodies go through page-locked staging
# into device buffers kept from call to call, on the n-body stream, and the
# sums come back the same way: no allocation (once the buffers are big
# enough) and one wait per call, for the results.
NBODY_OPTIONS = ("--fmad=true", "-ftz=true", "-Werror", "all-warnings")
NBODY_FAMILIES = ("nbody_cuda", "nbody")
NBODY_PARTS_PER_SM = 4              # source runs: up to this many groups per SM for a single group of targets
NBODY_PART_BYTES = 32 * 2 ** 20     # partial sums kept per launch (targets go in batches beyond that)


def nbody_source(real="float") -> str:
    """The CUDA n-body program's text (compiled with NBODY_OPTIONS)."""
    from .. import kernels
    return kernels.source("cuda", real, NBODY_FAMILIES)


def nbody_cubin(real="float", arch="sm_90") -> bytes:
    """The n-body program's cubin for ``arch``, as the backend builds it."""
    return compile_cubin(nbody_source(real), arch, NBODY_OPTIONS)


def _nbody_program(real):
    """The n-body kernels for ``real``, by name (compiled once per context)."""
    _context()
    key = ("nbody", real)
    if key not in _state["modules"]:
        from pycuda.compiler import SourceModule
        module = SourceModule(nbody_source(real), options=list(NBODY_OPTIONS), no_extern_c=True,
                              arch=_arch(_context()))
        names = ("nbody_accel_part", "nbody_accel_jerk_part", "nbody_sum_parts", "nbody_potential")
        _state["modules"][key] = {name: module.get_function(name) for name in names}
    return _state["modules"][key]


def _nbody_stream():
    if "nbody_stream" not in _state:
        _context()
        _state["nbody_stream"] = _driver().Stream()
    return _state["nbody_stream"]


def _nbody_buffer(pool, name, count, dtype, make):
    """A buffer of at least ``count`` values of ``dtype`` kept in ``pool``
    from call to call, grown to a power of two when too small.  Every call
    ends waiting for its stream, so nothing in flight uses a buffer that a
    later call replaces."""
    pool = _state.setdefault(pool, {})
    key, size = (name, np.dtype(dtype).str), max(1, int(count))
    if key not in pool or pool[key][1] < size:
        pool.pop(key, None)
        grown = 1 << (size - 1).bit_length()
        pool[key] = (make(grown, np.dtype(dtype)), grown)
    return pool[key][0]


def _nbody_device(name, count, dtype):
    return _nbody_buffer("nbody_device", name, count, dtype,
                         lambda n, dt: _driver().mem_alloc(n * dt.itemsize))


def _nbody_host(name, shape, dtype):
    """Page-locked host memory of ``shape`` (a view of a kept buffer)."""
    count = int(np.prod(shape, dtype=np.int64))
    buf = _nbody_buffer("nbody_host", name, count, dtype, lambda n, dt: _driver().pagelocked_empty(n, dt))
    return buf[:count].reshape(shape)


def _nbody_put(name, array, dtype, stream):
    """``array`` as ``dtype`` in the device buffer ``name`` (queued on ``stream``)."""
    host = _nbody_host(name, np.shape(array), dtype)
    host[...] = array
    dev = _nbody_device(name, host.size, dtype)
    if host.size:
        _driver().memcpy_htod_async(dev, host, stream)
    return dev


def _nbody_get(name, dev, shape, dtype, stream):
    """Queue the copy of ``dev`` into page-locked memory; returns that memory
    (read it after the stream is synchronized)."""
    host = _nbody_host(name, shape, dtype)
    if host.size:
        _driver().memcpy_dtoh_async(host, dev, stream)
    return host


def _sms() -> int:
    if "sms" not in _state:
        drv = _driver()
        _state["sms"] = int(_context().get_attribute(drv.device_attribute.MULTIPROCESSOR_COUNT))
    return _state["sms"]


def nbody_plan(ni, nj, j0, width, itemsize, sms):
    """(span, parts, batch) of a force call: the sources' tiles in ``parts``
    runs of ``span`` tiles, so that a few targets still give enough groups to
    fill ``sms`` multiprocessors; targets ``batch`` at a time so that the
    partial sums stay within NBODY_PART_BYTES.  The runs depend on the
    sources only (their count and first id), never on the targets, so a
    target's sum is the same however the targets are split over ranks."""
    from .. import kernels
    tile = kernels.CONSTANTS["TILE"]
    tiles = -(-(j0 % tile + nj) // tile)
    span = -(-tiles // max(1, NBODY_PARTS_PER_SM * sms))
    parts = -(-tiles // span)
    if parts == 1:
        return span, 1, ni
    batch = max(tile, NBODY_PART_BYTES // (parts * (width * itemsize + 4)) // tile * tile)
    return span, parts, min(batch, ni)


def _nbody_sums(prg, kernel, args, ni, nj, j0, width, dtype, stream):
    """Queue ``kernel`` (a *_part kernel; ``args`` up to its ``first``) over
    every target and the adding of its parts; returns the device buffers of
    the sums (ni x width) and of the pairs at one point (ni)."""
    from .. import kernels
    tile = kernels.CONSTANTS["TILE"]
    span, parts, batch = nbody_plan(ni, nj, j0, width, np.dtype(dtype).itemsize, _sms())
    out, bad = _nbody_device("sums", ni * width, dtype), _nbody_device("bad", ni, np.int32)
    if parts == 1:                      # one run: the part is the sum
        prg[kernel](*args, np.int64(0), np.int64(ni), np.int64(span), out, bad, block=(tile, 1, 1),
                    grid=(-(-ni // tile), 1), stream=stream)
        return out, bad
    part = _nbody_device("part", parts * batch * width, dtype)
    bads = _nbody_device("bads", parts * batch, np.int32)
    for first in range(0, ni, batch):
        count = min(batch, ni - first)
        prg[kernel](*args, np.int64(first), np.int64(count), np.int64(span), part, bads, block=(tile, 1, 1),
                    grid=(-(-count // tile), parts), stream=stream)
        prg["nbody_sum_parts"](part, bads, np.int64(parts), np.int64(first), np.int64(count), np.int64(width),
                               out, bad, block=(tile, 1, 1), grid=(-(-count // tile), 1), stream=stream)
    return out, bad


def _sources(xi, xj, mj, stream):
    """The kernels for the bodies' precision, its NumPy type, and the bodies
    in device buffers (the targets' positions copied once when they are
    the sources' too)."""
    real, dtype = device.real_of(xi.dtype)
    bx = _nbody_put("xi", xi, dtype, stream)
    bj = bx if xj is xi else _nbody_put("xj", xj, dtype, stream)
    return _nbody_program(real), dtype, bx, bj, _nbody_put("mj", mj, dtype, stream)


def nbody_accel(xi, xj, mj, j0, eps2, G, out, i0=None):
    """Same contract as numpy_.nbody_accel."""
    if len(xi) == 0 or len(xj) == 0:
        return 0
    stream = _nbody_stream()
    prg, dtype, bx, bj, bm = _sources(xi, xj, mj, stream)
    ni, nj = len(xi), len(xj)
    first = -(2 ** 62) if i0 is None else i0           # disjoint ids: no self-pairs
    args = (bx, np.int64(ni), bj, bm, np.int64(nj), np.int64(j0), np.int64(first), dtype(eps2), dtype(G))
    sums, bad = _nbody_sums(prg, "nbody_accel_part", args, ni, nj, j0, 3, dtype, stream)
    acc = _nbody_get("sums", sums, (ni, 3), dtype, stream)
    coincident = _nbody_get("bad", bad, (ni,), np.int32, stream)
    stream.synchronize()
    with np.errstate(over="ignore", invalid="ignore"):       # an overflow is caught by the model's checks
        out += acc.astype(out.dtype, copy=False)
    return int(coincident.sum())


def nbody_potential(xi, xj, mj, j0, i0, eps2, G):
    """Same contract as numpy_.nbody_potential."""
    phi = np.zeros(len(xi), dtype=np.float64)
    if len(xi) == 0 or len(xj) == 0:
        return phi
    from .. import kernels
    tile = kernels.CONSTANTS["TILE"]
    stream = _nbody_stream()
    prg, dtype, bx, bj, bm = _sources(xi, xj, mj, stream)
    bphi = _nbody_put("phi", phi, np.float64, stream)
    prg["nbody_potential"](bx, np.int64(len(xi)), bj, bm, np.int64(len(xj)), np.int64(j0), np.int64(i0),
                           dtype(eps2), dtype(G), bphi, block=(tile, 1, 1), grid=(-(-len(xi) // tile), 1),
                           stream=stream)
    got = _nbody_get("phi", bphi, phi.shape, np.float64, stream)
    stream.synchronize()
    phi[:] = got
    return phi


def nbody_accel_jerk(xi, vi, ids, xj, vj, mj, j0, eps2, G, acc, jerk):
    """Same contract as numpy_.nbody_accel_jerk."""
    if len(xi) == 0 or len(xj) == 0:
        return 0
    stream = _nbody_stream()
    prg, dtype, bx, bj, bm = _sources(xi, xj, mj, stream)
    bv = _nbody_put("vi", vi, dtype, stream)
    bw = bv if vj is vi else _nbody_put("vj", vj, dtype, stream)
    bids = _nbody_put("ids", ids, np.int64, stream)
    ni, nj = len(xi), len(xj)
    args = (bx, bv, bids, np.int64(ni), bj, bw, bm, np.int64(nj), np.int64(j0), dtype(eps2), dtype(G))
    sums, bad = _nbody_sums(prg, "nbody_accel_jerk_part", args, ni, nj, j0, 6, dtype, stream)
    both = _nbody_get("sums", sums, (ni, 6), dtype, stream)
    coincident = _nbody_get("bad", bad, (ni,), np.int32, stream)
    stream.synchronize()
    with np.errstate(over="ignore", invalid="ignore"):
        acc += both[:, :3].astype(acc.dtype, copy=False)
        jerk += both[:, 3:].astype(jerk.dtype, copy=False)
    return int(coincident.sum())
