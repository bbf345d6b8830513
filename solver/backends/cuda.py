"""CUDA backend through PyCUDA: the device kernels of ``kernels/``, the
same source the ``opencl`` backend runs (and CI runs on PoCL), compiled by
nvcc with ``--fmad=false`` so that the device rounds like the NumPy
reference (the n-body kernels apart: see "n-body" below).

No toolkit is needed at run time: the kernels are compiled when the
package is built (``setup.py``, or ``make cuda-kernels`` in a source
tree: cubins for sm_80 and sm_90 and PTX for newer GPUs in one fatbin per
kernel set, named by a digest of its source and options) and loaded
with ``module_from_buffer``.  Where no image matches the source, nvcc (on
PATH or under CUDA_HOME) compiles one, with warnings as errors, into this
user's cache (``$XDG_CACHE_HOME/solver/cuda``), written under a temporary
name and renamed into place, so ranks that compile at once never read a
half-written image.  ``available()`` is true only where a driver, a device
and an image (or nvcc) are there.

Heat state stays on the device (``DeviceArray``).  A halo exchange gathers
every region it sends with one kernel into one buffer, copies it to
page-locked host memory with one copy (or hands device memory to a
CUDA-aware MPI) and the host waits on one event; what arrives goes back
with one copy and one kernel, on a copy stream, while the interior kernels
run on the compute stream, which waits on an event for the ghosts (see
parallel/halo.py).  Launches put at least 128 threads in a block, along
the box's long axes, and split a box whose rows or planes exceed CUDA's
grid limit.  Reductions bring back a few numbers; n-body state stays on
the host.

One context per rank: the primary context of the device picked by
node-local rank among the visible ones (``CUDA_VISIBLE_DEVICES`` applies),
or ``backend.device``; never ``pycuda.autoinit``; it is popped at exit.
Without a driver, a device or kernels the backend says why and is not
used.  Its host code runs in CI on a simulated driver (tests/cuda_sim);
it has not yet run on a GPU.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

from .. import kernels
from ..config import ConfigError
from . import device
from .numpy_ import hermite_correct, hermite_predict  # noqa: F401  (n-body state stays on the host)

name = "cuda"
ARCHS = ("sm_80", "sm_90")                  # A100, H100/H200: cubins in the image
PTX = "compute_90"                          # and PTX, which the driver compiles for newer GPUs
OPTIONS = ("--fmad=false", "-Werror", "all-warnings")
IMAGES = os.path.join(kernels.HERE, "cuda")  # images built with the package
# the kernel sets loaded at run time: name -> (families, real, nvcc options)
BUILDS = {real: (kernels.FAMILIES, real, OPTIONS) for real in ("double", "float")}
THREADS = 128                               # per block of a box launch, at least (when the box has them)
GRID_YZ = 65535                             # CUDA's limit on grid y and z
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
    oldest = min(drv.Device(i).compute_capability() for i in range(count))
    if oldest < (8, 0):
        return False, (f"a visible device has compute capability {oldest[0]}.{oldest[1]}; the kernels are built "
                       f"for 8.0 and newer ({', '.join(ARCHS)}, PTX {PTX})")
    return loadable()


# ----------------------------------------------------------------------------
# kernel images: built with the package, or compiled here into a cache of our own
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


def _nvcc(source: str, target: list, options, suffix: str) -> bytes:
    compiler = nvcc()
    if compiler is None:
        raise CompileError("nvcc not found: put the CUDA toolkit's bin on PATH or set CUDA_HOME "
                           "(pip's cuda-toolkit[nvcc] brings one)")
    with tempfile.TemporaryDirectory(prefix="solver-nvcc-") as tmp:
        src, out = os.path.join(tmp, "kernels.cu"), os.path.join(tmp, "kernels" + suffix)
        with open(src, "w", encoding="utf-8") as fh:
            fh.write(source)
        done = subprocess.run([compiler, *target, *options, "-o", out, src], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            raise CompileError(f"nvcc {' '.join(target)} failed:\n{done.stdout}{done.stderr}")
        with open(out, "rb") as fh:
            return fh.read()


def compile_cubin(source: str, arch: str = "sm_90", options=OPTIONS) -> bytes:
    """The cubin of ``source`` (a whole program from ``kernels.source``) for
    ``arch``, by nvcc with this backend's options."""
    return _nvcc(source, ["-cubin", f"-arch={arch}"], options, ".cubin")


def compile_fatbin(source: str, options=OPTIONS) -> bytes:
    """One image with cubins for ARCHS and PTX for newer GPUs."""
    target = ["-fatbin"] + [f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHS]
    target += [f"-gencode=arch={PTX},code={PTX}"]
    return _nvcc(source, target, options, ".fatbin")


def _build_source(build):
    families, real, options = BUILDS[build]
    return kernels.source("cuda", real, families), tuple(options)


def image_name(build: str) -> str:
    """The file name of a kernel set's image: a digest of what makes it."""
    source, options = _build_source(build)
    key = "\0".join([source, *options, *ARCHS, PTX]).encode()
    return f"{build}-{hashlib.sha256(key).hexdigest()[:24]}.fatbin"


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "solver", "cuda")


def _found_image(build):
    for folder in (IMAGES, cache_dir()):
        path = os.path.join(folder, image_name(build))
        if os.path.isfile(path):
            return path
    return None


def loadable():
    """(True, "") where every kernel set has an image, or nvcc can make one."""
    missing = [b for b in BUILDS if _found_image(b) is None]
    if missing and nvcc() is None:
        return False, (f"no kernel image for this version in {IMAGES} ({', '.join(missing)}) and no nvcc to "
                       f"compile one: reinstall the package where nvcc is found, or put nvcc on PATH")
    return True, ""


def image(build: str) -> bytes:
    """The image of a kernel set: built with the package, cached, or
    compiled now (and cached, atomically)."""
    from ..io.safefile import write_atomically
    path = _found_image(build)
    if path is not None:
        with open(path, "rb") as fh:
            return fh.read()
    source, options = _build_source(build)
    data = compile_fatbin(source, options)
    os.makedirs(cache_dir(), exist_ok=True)
    write_atomically(os.path.join(cache_dir(), image_name(build)), data, sync=False)
    return data


def build_images(dest: str) -> list[str]:
    """Compile every kernel set into ``dest`` (the package build's step)."""
    from ..io.safefile import write_atomically
    os.makedirs(dest, exist_ok=True)
    written = []
    for build in BUILDS:
        source, options = _build_source(build)
        path = os.path.join(dest, image_name(build))
        write_atomically(path, compile_fatbin(source, options), sync=False)
        written.append(path)
    return written


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
    _retired.clear()


def _release():
    context = _state.pop("context", None)
    if context is not None:
        try:
            _driver().Context.synchronize()
            _retired.clear()
            _driver().Context.pop()
        except Exception:            # noqa: BLE001 - at exit, the driver may already be gone
            pass


def _event():
    """An event for ordering only (timing costs at every record)."""
    drv = _driver()
    return drv.Event(drv.event_flags.DISABLE_TIMING)


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
    """The kernels of one kernel set (see BUILDS), loaded from its image."""

    def __init__(self, build):
        self._module = _driver().module_from_buffer(image(build))
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
def check_memory(nbytes, what):
    """A ConfigError (one line) unless ``nbytes`` more fit in the device's free memory."""
    drv = _driver()
    gpu = _context()
    free, total = drv.mem_get_info()
    if nbytes > free and _retired:           # dropped arrays not yet freed: free them first
        sync()
        free, total = drv.mem_get_info()
    if nbytes > free:
        raise ConfigError(f"device memory: {what} needs {nbytes / 2**30:.3g} GiB on {gpu.name()}, which has "
                          f"{free / 2**30:.3g} GiB free of {total / 2**30:.3g} GiB; use more ranks (one GPU "
                          f"each) or a smaller problem")


class DeviceArray:
    """A C-ordered array in device memory: what ``zeros`` and ``from_host`` return."""

    def __init__(self, shape, dtype=np.float64):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize
        check_memory(self.nbytes, f"an array of {'x'.join(map(str, self.shape)) or '1'} {self.dtype.name}")
        self.buffer = _driver().mem_alloc(max(self.nbytes, self.dtype.itemsize))

    @property
    def __cuda_array_interface__(self):
        """What mpi4py reads to hand this memory to a CUDA-aware MPI."""
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (int(self.buffer), False), "version": 3}

    def __del__(self):
        try:
            _retired.append(self.buffer)
        except Exception:            # noqa: BLE001 - half made, or at interpreter exit
            pass


# The memory of dropped arrays, kept until the host knows that the work
# queued before has run (cuMemFree is not promised to wait for it): freed
# after the next blocking copy to the host (a reduction's, to_host) or synchronize.
_retired: list = []


def _reap():
    _retired.clear()


class DeviceView:
    """Part of a DeviceArray's memory (a halo message), for a CUDA-aware MPI."""

    def __init__(self, base, offset, shape):
        self.base, self.offset, self.shape, self.dtype = base, int(offset), tuple(shape), base.dtype

    @property
    def __cuda_array_interface__(self):
        address = int(self.base.buffer) + self.offset * self.dtype.itemsize
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (address, False), "version": 3}


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
        _reap()
    return out


def sync():
    """Wait until every queued kernel and copy has finished (for timings)."""
    if "context" in _state:
        _driver().Context.synchronize()
        _reap()


def use_gpu_aware_mpi():
    """Halo messages go straight from and to device memory (the MPI library
    must be CUDA-aware; mpi4py takes ``__cuda_array_interface__`` objects)."""
    _state["gpu_aware"] = True


def messages_on_device() -> bool:
    """Whether halo messages are device memory (a CUDA-aware MPI)."""
    return bool(_state.get("gpu_aware"))


def halo_buffer(shape, dtype):
    """A halo region's message buffer: page-locked host memory (fast copies),
    or device memory with a CUDA-aware MPI."""
    _context()                         # page-locked memory belongs to a context
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


def _after_compute():
    """The copy stream, after the kernels queued so far on the compute stream."""
    copy, written = _state["copy"], _event()
    written.record(_compute())
    copy.wait_for_event(written)
    return copy


def pack(array, where, out):
    """``out`` = ``array[where]``, on the copy stream: the halo_pack kernel
    (after the kernels that wrote ``array``) gathers the region into
    contiguous device memory and an async copy brings it to the page-locked
    host buffer; with a CUDA-aware MPI ``out`` is device memory.  Returns
    when MPI may read ``out``.  (One region per call: halo_plan does a whole
    exchange at once.)"""
    drv = _driver()
    args, count = device.box3(array.shape, where)
    prg = _program("double")
    copy = _after_compute()
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
    done = _event()
    done.record(copy)
    _state["halo_in"].append(done)


# ----------------------------------------------------------------------------
# a whole halo exchange: every region in one buffer, one kernel and one copy each way
class HaloPlan:
    """The regions an exchange sends (``send_boxes``, gathered into
    ``send``) and receives (``recv_boxes``, scattered from ``recv``) of a
    block of ``shape``: ``send`` and ``recv`` are page-locked host memory
    (or device memory with a CUDA-aware MPI), and ``send_views`` /
    ``recv_views`` each region's part of them, shaped as the region."""

    def __init__(self, shape, send_boxes, recv_boxes, dtype):
        _context()
        self.shape = tuple(shape)
        self.send_table, send_total, send_shapes = self._table(send_boxes)
        self.recv_table, recv_total, recv_shapes = self._table(recv_boxes)
        self.totals = (send_total, recv_total)
        self.nboxes = (len(send_boxes), len(recv_boxes))
        on_device = messages_on_device()
        self.send = DeviceArray((max(1, send_total),), dtype) if on_device else \
            _driver().pagelocked_empty((max(1, send_total),), dtype)
        self.recv = DeviceArray((max(1, recv_total),), dtype) if on_device else \
            _driver().pagelocked_empty((max(1, recv_total),), dtype)
        self.send_views = self._views(self.send, send_shapes, on_device)
        self.recv_views = self._views(self.recv, recv_shapes, on_device)
        if not on_device:           # device staging for the one copy each way
            self.send_stage = DeviceArray((max(1, send_total),), dtype)
            self.recv_stage = DeviceArray((max(1, recv_total),), dtype)
        self.ready = None

    def _table(self, boxes):
        rows, first, shapes = [], 0, []
        for box in boxes:
            args, count = device.box3(self.shape, box)      # (n1, n2, lo0, lo1, lo2, m1, m2, count)
            rows.append([int(a) for a in args[2:7]] + [first])
            shapes.append(tuple(s.stop - s.start for s in box))
            first += count
        table = from_host(np.array(rows or [[0] * 6], np.int64).reshape(-1))
        return table, first, shapes

    @staticmethod
    def _views(buf, shapes, on_device):
        out, first = [], 0
        for shape in shapes:
            count = int(np.prod(shape))
            out.append(DeviceView(buf, first, shape) if on_device else buf[first:first + count].reshape(shape))
            first += count
        return out


def halo_plan(shape, send_boxes, recv_boxes, dtype=np.float64) -> HaloPlan:
    return HaloPlan(shape, send_boxes, recv_boxes, dtype)


def _n12(shape):
    shape = (1,) * (3 - len(shape)) + tuple(shape)
    return np.int64(shape[1]), np.int64(shape[2])


def halo_gather(array, plan):
    """Queue the gathering of every send region of ``array`` (after the
    kernels that wrote it) into ``plan.send``: one kernel, and one copy to
    the host; ``halo_wait`` or ``halo_ready`` tell when MPI may read it."""
    prg, copy = _program("double"), _after_compute()
    total = plan.totals[0]
    target = plan.send if isinstance(plan.send, DeviceArray) else plan.send_stage
    if total:
        _each_cell(prg.halo_pack_boxes, copy, total, array.buffer, *_n12(array.shape), plan.send_table.buffer,
                   np.int64(plan.nboxes[0]), np.int64(total), target.buffer)
        if target is not plan.send:
            _driver().memcpy_dtoh_async(plan.send, target.buffer, copy)
    plan.ready = _event()
    plan.ready.record(copy)


def halo_ready(plan) -> bool:
    """Whether the gathered regions have arrived (does not wait)."""
    return plan.ready is None or plan.ready.query()


def halo_wait(plan):
    """Wait until MPI may read ``plan.send`` (the exchange's one host wait)."""
    if plan.ready is not None:
        plan.ready.synchronize()
        plan.ready = None


def halo_scatter(plan, array):
    """Queue ``plan.recv`` into the receive regions of ``array``: one copy
    and one kernel on the copy stream; the compute stream waits for them
    before its next kernel (see _compute)."""
    prg, copy = _program("double"), _state["copy"]
    total = plan.totals[1]
    if not total:
        return
    source = plan.recv
    if not isinstance(plan.recv, DeviceArray):
        _driver().memcpy_htod_async(plan.recv_stage.buffer, plan.recv, copy)
        source = plan.recv_stage
    _each_cell(prg.halo_unpack_boxes, copy, total, array.buffer, *_n12(array.shape), plan.recv_table.buffer,
               np.int64(plan.nboxes[1]), np.int64(total), source.buffer)
    done = _event()
    done.record(copy)
    _state["halo_in"].append(done)


# ----------------------------------------------------------------------------
# reductions
def _reduce(kernel, array, box, width, *extra):
    drv = _driver()
    group = kernels.CONSTANTS["GROUP"]
    args, count = device.box3(array.shape, box)
    groups = max(1, -(-count // group))
    partial = np.empty((groups, width))
    stream = _compute()
    getattr(_program("double"), kernel)(array.buffer, *args, *extra, drv.Out(partial),
                                        block=(group, 1, 1), grid=(groups, 1), stream=stream)
    stream.synchronize()
    _reap()                 # the copy of the partials waited for all work queued before (legacy default stream)
    return partial


box_stats, all_finite, box_error = device.reductions(_reduce)     # same contracts as numpy_'s


# ----------------------------------------------------------------------------
# heat
def heat_block(padded_shape, fields=0) -> int:
    """Steps per halo exchange: each level is one kernel launch over the
    whole box (no reuse from cache), so fusing saves messages only; two.
    The device memory the heat model will hold is checked here, before it
    allocates anything: two states, two levels, the fields."""
    check_memory((4 + fields) * 8 * int(np.prod(padded_shape)),
                 f"a heat block of {'x'.join(map(str, padded_shape))} cells")
    return 2


def _block_shape(sizes):
    """Threads per block along (x, y, z) for a box of ``sizes`` cells (x
    the contiguous axis): up to THREADS, along x first and then along the
    other axes, so that a thin box still gets a full block along a long axis."""
    block, room = [], THREADS
    for k, n in enumerate(sizes):
        b = 1
        while b < n and b * 2 <= room and (k < 2 or b * 2 <= 64):
            b *= 2
        block.append(b)
        room //= b
    return tuple(block + [1] * (3 - len(block)))


def _chunks(n, block):
    """[start, stop) pieces of ``n`` rows, each within CUDA's grid limit for ``block``."""
    most = GRID_YZ * block
    return [(a, min(n, a + most)) for a in range(0, max(n, 1), most)]


def _launch_box(kernel, lo, hi, args_for):
    """Launch ``kernel`` over the box [lo, hi) (axis order; the last axis
    is the contiguous one, grid x), in as many launches as the grid limit
    needs along the others; ``args_for(lo, hi)`` gives each launch's arguments."""
    sizes = [h - l for l, h in zip(lo, hi)][::-1]
    block = _block_shape(sizes)
    nd = len(lo)
    ranges = [_chunks(sizes[1], block[1])] + ([_chunks(sizes[2], block[2])] if nd == 3 else [[(0, 1)]])
    for y0, y1 in ranges[0]:
        for z0, z1 in ranges[1]:
            clo, chi = list(lo), list(hi)
            clo[nd - 2], chi[nd - 2] = lo[nd - 2] + y0, lo[nd - 2] + y1
            if nd == 3:
                clo[0], chi[0] = lo[0] + z0, lo[0] + z1
            grid = (-(-sizes[0] // block[0]), -(-(y1 - y0) // block[1]), -(-(z1 - z0) // block[2]))
            kernel(*args_for(clo, chi), block=block, grid=grid, stream=_compute())


def _face_launches(kernel, ca, cb, args_for):
    """A face kernel (heat_wall, heat_edge_sum: rows p < ca along grid y,
    cells r < cb along grid x) over the face, split where ca exceeds the
    grid limit; ``args_for(first row, rows)`` gives each launch's arguments."""
    block = _block_shape([cb, ca])
    for p0, p1 in _chunks(ca, block[1]):
        grid = (-(-cb // block[0]), -(-(p1 - p0) // block[1]), 1)
        kernel(*args_for(p0, p1 - p0), block=block, grid=grid, stream=_compute())


def _walls(prg, buf, shape, lo, hi, grow, walls):
    """Ghost layers beyond the wall sides of the box [lo, hi) (see device.wall_faces)."""
    for k, start, sa, ca, sb, cb, toward, *_ in device.wall_faces(shape, lo, hi, grow):
        _face_launches(prg.heat_wall, ca, cb,
                       lambda p0, n: (buf, *map(np.int64, (start + p0 * sa, sa, n, sb, cb, toward)),
                                      *map(np.float64, walls[k])))


def _edge_sums(prg, buf, shape, lo, hi, grow, sums):
    """Each wall's sums += its edge cells of the box [lo, hi)."""
    for k, start, sa, ca, sb, cb, toward, at, fa, fb in device.wall_faces(shape, lo, hi, grow):
        if sums[k] is not None:
            _face_launches(prg.heat_edge_sum, ca, cb,
                           lambda p0, n: (buf, *map(np.int64, (start + toward + p0 * sa, sa, n, sb, cb)),
                                          sums[k].buffer, *map(np.int64, (at + p0 * fa, fa, fb))))


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
            _levels.clear()                     # (their memory is retired, not freed under queued kernels)
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
        _launch_box(kernel, blo, bhi, lambda clo, chi: [cur.buffer, out.buffer, *map(np.int64, shape[1:]),
                                                        *map(np.int64, (*clo, *chi)), *extra])
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
    return kernels.source("cuda", real, NBODY_FAMILIES)


def nbody_cubin(real="float", arch="sm_90") -> bytes:
    """The n-body program's cubin for ``arch``: the source and options of
    its image (BUILDS), for one architecture (what bench sass reads)."""
    families, real, options = BUILDS[f"nbody-{real}"]
    return compile_cubin(kernels.source("cuda", real, families), arch, options)


# the n-body kernel sets, built with the package like the others (see image)
BUILDS.update({f"nbody-{real}": (NBODY_FAMILIES, real, NBODY_OPTIONS) for real in ("double", "float")})


def _nbody_program(real):
    """The n-body kernels for ``real``, from their image (once per context)."""
    _context()
    build = f"nbody-{real}"
    if build not in _state["modules"]:
        module = _driver().module_from_buffer(image(build))
        names = ("nbody_accel_part", "nbody_accel_jerk_part", "nbody_sum_parts", "nbody_potential")
        _state["modules"][build] = {name: module.get_function(name) for name in names}
    return _state["modules"][build]


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
    def make(n, dt):
        check_memory(n * dt.itemsize, f"n-body buffer {name!r}")
        return _driver().mem_alloc(n * dt.itemsize)
    return _nbody_buffer("nbody_device", name, count, dtype, make)


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
