"""A test double of ``pycuda.driver``: the part the cuda backend uses, on
the host.  Kernels are the real source compiled by the host C++ compiler
(see kernelc.py and runtime_*.h); the rest emulates what the CUDA driver
promises and no more:

- streams hold their work back until something forces it (a synchronize,
  an event wait, a legacy default-stream operation), then run it with the
  streams interleaved in a varying order;
- launch limits: at most 1024 threads per block (z at most 64), grid x
  below 2^31, grid y and z at most 65535, 48 KiB of shared memory per block;
- every kernel argument is checked against the kernel's signature (NumPy
  scalar types, pointers into live allocations of the right element type
  where the host array is known);
- device memory starts as NaN bytes and has guard bytes on both sides,
  checked after every kernel and copy; freed memory is poisoned, and a
  kernel that still points into it fails;
- page-locked memory needs a current context; events created with
  DISABLE_TIMING cannot be timed.

``counts`` holds what the host asked of the device since ``reset_counts()``:
launches, host synchronizations, copies per direction, events created."""
from __future__ import annotations

import bisect
import ctypes
import os
import random
import weakref

import numpy as np

from . import kernelc

GUARD = 64
GUARD_BYTE = 0xA5
MAX_THREADS, MAX_BLOCK_Z, MAX_GRID_X, MAX_GRID_YZ = 1024, 64, 2**31 - 1, 65535
MAX_SHARED = 48 * 1024


# --- errors, as PyCUDA names them -------------------------------------------------
class Error(Exception):
    pass


class LogicError(Error):
    pass


class LaunchError(Error):
    pass


class RuntimeError(Error):         # noqa: A001 - PyCUDA's name
    pass


class MemoryError(Error):          # noqa: A001 - PyCUDA's name
    pass


class CompileError(Error):
    pass


# --- enums --------------------------------------------------------------------------
class event_flags:                 # noqa: N801
    DEFAULT, BLOCKING_SYNC, DISABLE_TIMING, INTERPROCESS = 0, 1, 2, 4


class device_attribute:            # noqa: N801
    MULTIPROCESSOR_COUNT = "MULTIPROCESSOR_COUNT"
    CLOCK_RATE = "CLOCK_RATE"
    MAX_THREADS_PER_BLOCK = "MAX_THREADS_PER_BLOCK"
    MAX_BLOCK_DIM_X, MAX_BLOCK_DIM_Y, MAX_BLOCK_DIM_Z = "MAX_BLOCK_DIM_X", "MAX_BLOCK_DIM_Y", "MAX_BLOCK_DIM_Z"
    MAX_GRID_DIM_X, MAX_GRID_DIM_Y, MAX_GRID_DIM_Z = "MAX_GRID_DIM_X", "MAX_GRID_DIM_Y", "MAX_GRID_DIM_Z"
    MAX_SHARED_MEMORY_PER_BLOCK = "MAX_SHARED_MEMORY_PER_BLOCK"
    WARP_SIZE = "WARP_SIZE"
    COMPUTE_CAPABILITY_MAJOR, COMPUTE_CAPABILITY_MINOR = "COMPUTE_CAPABILITY_MAJOR", "COMPUTE_CAPABILITY_MINOR"
    PCI_BUS_ID = "PCI_BUS_ID"


class function_attribute:          # noqa: N801
    MAX_THREADS_PER_BLOCK, SHARED_SIZE_BYTES, NUM_REGS = "MAX_THREADS_PER_BLOCK", "SHARED_SIZE_BYTES", "NUM_REGS"
    LOCAL_SIZE_BYTES, CONST_SIZE_BYTES = "LOCAL_SIZE_BYTES", "CONST_SIZE_BYTES"


ATTRIBUTES = {
    "MULTIPROCESSOR_COUNT": 132, "CLOCK_RATE": 1_980_000, "MAX_THREADS_PER_BLOCK": MAX_THREADS,
    "MAX_BLOCK_DIM_X": 1024, "MAX_BLOCK_DIM_Y": 1024, "MAX_BLOCK_DIM_Z": MAX_BLOCK_Z,
    "MAX_GRID_DIM_X": MAX_GRID_X, "MAX_GRID_DIM_Y": MAX_GRID_YZ, "MAX_GRID_DIM_Z": MAX_GRID_YZ,
    "MAX_SHARED_MEMORY_PER_BLOCK": MAX_SHARED, "WARP_SIZE": 32, "COMPUTE_CAPABILITY_MAJOR": 9,
    "COMPUTE_CAPABILITY_MINOR": 0, "PCI_BUS_ID": 0,
}


# --- the simulated machine ----------------------------------------------------------
class _Machine:
    def __init__(self):
        self.initialised = False
        self.devices = int(os.environ.get("CUDA_SIM_DEVICES", "1"))
        self.memory = int(os.environ.get("CUDA_SIM_MEMORY", str(1 << 30)))
        self.contexts: list = []           # the context stack
        self.live = weakref.WeakValueDictionary()   # address -> DeviceAllocation (freed when dropped, as PyCUDA's)
        self.addresses: list = []           # sorted live addresses
        self.pinned: dict = {}              # address -> (nbytes, array)
        self.allocated = 0
        self.streams: list = []
        self.rng = random.Random(int(os.environ.get("CUDA_SIM_SEED", "0")))
        self.counts = _fresh_counts()
        self.graveyard: list = []           # freed memory, poisoned, kept while work may still point at it


def _fresh_counts():
    return {"launches": 0, "host_syncs": 0, "htod": 0, "dtoh": 0, "dtod": 0, "events": 0, "timed_events": 0,
            "allocations": 0}


_m = _Machine()
counts = _m.counts
trace = None        # a list to append what the host asks, in order: ("launch", name, grid, block, stream), ("sync", what)


def _trace(*entry):
    if trace is not None:
        trace.append(entry)


def reset_counts():
    for k in counts:
        counts[k] = 0


def reset():
    """A fresh machine (no contexts, no memory), for a test that needs one."""
    global _m, counts, trace
    _m = _Machine()
    counts = _m.counts
    trace = None


def _need_init():
    if not _m.initialised:
        raise LogicError("cuInit has not been called (pycuda.driver.init())")


def _need_context(what):
    _need_init()
    if not _m.contexts:
        raise LogicError(f"{what} failed: invalid device context - no currently active context?")


def init(flags=0):
    _m.initialised = True


def get_version():
    return (12, 4, 0)


def get_driver_version():
    return 12040


# --- devices and contexts -----------------------------------------------------------
class Device:
    def __init__(self, ordinal):
        _need_init()
        if not 0 <= ordinal < _m.devices:
            raise LogicError(f"cuDeviceGet failed: invalid device ordinal {ordinal}")
        self.ordinal = ordinal

    @staticmethod
    def count():
        _need_init()
        return _m.devices

    def name(self):
        return "Simulated GPU (cuda_sim)"

    def compute_capability(self):
        return (ATTRIBUTES["COMPUTE_CAPABILITY_MAJOR"], ATTRIBUTES["COMPUTE_CAPABILITY_MINOR"])

    def total_memory(self):
        return _m.memory

    def get_attribute(self, attribute):
        return ATTRIBUTES[attribute]

    def get_attributes(self):
        return dict(ATTRIBUTES)

    def pci_bus_id(self):
        return f"0000:{self.ordinal:02x}:00.0"

    def retain_primary_context(self):
        return Context(self)

    def make_context(self, flags=0):
        ctx = Context(self)
        ctx.push()
        return ctx

    def __eq__(self, other):
        return isinstance(other, Device) and other.ordinal == self.ordinal

    def __hash__(self):
        return self.ordinal


class Context:
    def __init__(self, device):
        self.device = device

    def push(self):
        _m.contexts.append(self)

    @staticmethod
    def pop():
        if not _m.contexts:
            raise LogicError("cuCtxPopCurrent failed: invalid context")
        _m.contexts.pop()

    def detach(self):
        if self in _m.contexts:
            _m.contexts.remove(self)

    @staticmethod
    def get_device():
        _need_context("cuCtxGetDevice")
        return _m.contexts[-1].device

    @staticmethod
    def synchronize():
        _need_context("cuCtxSynchronize")
        counts["host_syncs"] += 1
        _trace("sync", "context")
        _run_all()

    @staticmethod
    def get_current():
        return _m.contexts[-1] if _m.contexts else None


def mem_get_info():
    _need_context("cuMemGetInfo")
    return (_m.memory - _m.allocated, _m.memory)


# --- memory ---------------------------------------------------------------------------
class DeviceAllocation:
    def __init__(self, nbytes):
        self.nbytes = int(nbytes)
        self._raw = np.full(self.nbytes + 2 * GUARD, 0xFF, np.uint8)        # NaN bytes: nothing starts as 0
        self._raw[:GUARD] = GUARD_BYTE
        self._raw[GUARD + self.nbytes:] = GUARD_BYTE
        self.address = self._raw.ctypes.data + GUARD
        self.freed = False
        _m.live[self.address] = self
        bisect.insort(_m.addresses, self.address)
        _m.allocated += self.nbytes
        counts["allocations"] += 1

    def __int__(self):
        return self.address

    __index__ = __int__

    def view(self) -> np.ndarray:
        return self._raw[GUARD:GUARD + self.nbytes]

    def check_guards(self, after):
        if (self._raw[:GUARD] != GUARD_BYTE).any() or (self._raw[GUARD + self.nbytes:] != GUARD_BYTE).any():
            raise LaunchError(f"{after} wrote outside a device allocation of {self.nbytes} bytes "
                              f"(a guard byte changed: out-of-bounds write)")

    def free(self):
        if self.freed:
            return
        self.check_guards("something")
        self.freed = True
        _m.live.pop(self.address, None)
        if self.address in _m.addresses:
            _m.addresses.remove(self.address)
        _m.allocated -= self.nbytes
        self._raw[GUARD:GUARD + self.nbytes] = 0xFF
        # the memory stays mapped (poisoned) so that queued work that still
        # points at it is caught at run time, not as a crash
        _m.graveyard.append(self)
        if len(_m.graveyard) > 256:
            _m.graveyard.pop(0)

    def __del__(self):
        try:
            self.free()
        except Exception:      # noqa: BLE001 - at interpreter exit
            pass


def mem_alloc(nbytes):
    _need_context("cuMemAlloc")
    if nbytes <= 0:
        raise LogicError("cuMemAlloc failed: invalid value (zero bytes)")
    if _m.allocated + nbytes > _m.memory:
        raise MemoryError("cuMemAlloc failed: out of memory")
    return DeviceAllocation(nbytes)


def mem_alloc_like(array):
    return mem_alloc(max(array.nbytes, 1))


def _allocation_at(address, nbytes=1):
    """The live allocation holding [address, address + nbytes), or None."""
    k = bisect.bisect_right(_m.addresses, address) - 1
    if k < 0:
        return None
    alloc = _m.live.get(_m.addresses[k])
    if alloc is None or alloc.freed:
        return None
    return alloc if address + nbytes <= alloc.address + alloc.nbytes else None


def _device(ptr, nbytes, what):
    address = int(ptr)
    alloc = _allocation_at(address, max(nbytes, 1))
    if alloc is None:
        freed = any(g.address <= address < g.address + g.nbytes for g in _m.graveyard)
        raise LogicError(f"{what}: {'freed' if freed else 'no'} device memory at {address:#x} "
                         f"for {nbytes} bytes")
    return alloc, np.frombuffer((ctypes.c_uint8 * nbytes).from_address(address), np.uint8) if nbytes else None


def _host_bytes(array):
    array = np.asarray(array)
    if not array.flags.c_contiguous:
        raise LogicError("host memory of a copy must be contiguous")
    return array.reshape(-1).view(np.uint8)


def _is_pinned(array):
    address = np.asarray(array).ctypes.data
    return any(a <= address < a + n for a, (n, _) in _m.pinned.items())


class HostAllocation:
    def __init__(self, nbytes):
        self.nbytes = nbytes


def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
    _need_context("cuMemHostAlloc")
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(max(n, 1), np.uint8)
    _m.pinned[raw.ctypes.data] = (max(n, 1), raw)
    return raw[:n].view(dtype).reshape(shape)


def pagelocked_zeros(shape, dtype, order="C", mem_flags=0):
    out = pagelocked_empty(shape, dtype, order, mem_flags)
    out[...] = 0
    return out


# --- streams and events ---------------------------------------------------------------
class _Op:
    def __init__(self, run, what):
        self.run, self.what, self.done = run, what, False


class Stream:
    def __init__(self, flags=0):
        _need_context("cuStreamCreate")
        self.queue: list[_Op] = []
        _m.streams.append(self)

    def _add(self, run, what):
        op = _Op(run, what)
        self.queue.append(op)
        return op

    def synchronize(self):
        counts["host_syncs"] += 1
        _trace("sync", "stream")
        _run_until([(self, len(self.queue))])

    def is_done(self):
        return not self.queue

    def wait_for_event(self, event):
        if event.op is None:           # never recorded: nothing to wait for (as CUDA)
            return
        target = event.op

        def wait():
            _run_until([(target.stream, target.stream.queue.index(target) + 1)] if not target.done else [])
        self._add(wait, "wait for an event")


class Event:
    def __init__(self, flags=0):
        self.flags = flags
        self.op = None
        counts["events"] += 1
        if not flags & event_flags.DISABLE_TIMING:
            counts["timed_events"] += 1

    def record(self, stream=None):
        if stream is None:             # the legacy default stream: after everything queued before
            _run_all()
            self.op = _Op(lambda: None, "event")
            self.op.done = True
            self.op.stream = None
            return self
        op = stream._add(lambda: None, "event record")
        op.stream = stream
        self.op = op
        return self

    def synchronize(self):
        counts["host_syncs"] += 1
        _trace("sync", "event")
        self._complete()
        return self

    def _complete(self):
        if self.op is not None and not self.op.done:
            _run_until([(self.op.stream, self.op.stream.queue.index(self.op) + 1)])

    def query(self):
        """Whether the work before the record has run: the device makes
        progress on its own, here at random moments when asked."""
        if self.op is not None and not self.op.done and _m.rng.random() < 0.5:
            self._complete()
        return self.op is None or self.op.done

    def time_since(self, other):
        for e in (self, other):
            if e.flags & event_flags.DISABLE_TIMING:
                raise LogicError("cuEventElapsedTime failed: invalid resource handle "
                                 "(an event created with DISABLE_TIMING)")
            e._complete()
        return 0.001

    def time_till(self, other):
        return other.time_since(self)


def _run_until(targets):
    """Run queued work until each (stream, n) has run its first n operations,
    picking the next stream at random among those with work still needed."""
    need = {s: n for s, n in targets if s is not None}
    while True:
        ready = [s for s, n in need.items() if s.queue and n > 0]
        if not ready:
            return
        stream = _m.rng.choice(ready)
        op = stream.queue.pop(0)
        need[stream] -= 1
        op.run()
        op.done = True


def _run_all():
    _run_until([(s, len(s.queue)) for s in _m.streams])


def _enqueue(stream, run, what):
    """Queue ``run`` on ``stream``, or run it now on the legacy default stream
    (after all work queued before, on every stream)."""
    if stream is None:
        _run_all()
        run()
    else:
        stream._add(run, what)


# --- copies ---------------------------------------------------------------------------
def _copy_in(dest, src, what):
    data = _host_bytes(src)
    alloc, view = _device(dest, data.size, what)

    def run():
        view[:] = data
        alloc.check_guards(what)
    return run


def _copy_out(dest, src, what):
    data = _host_bytes(dest)
    alloc, view = _device(src, data.size, what)

    def run():
        data[:] = view
    return run


def memcpy_htod(dest, src):
    _need_context("cuMemcpyHtoD")
    counts["htod"] += 1
    counts["host_syncs"] += 1
    _trace("sync", "memcpy_htod")
    _enqueue(None, _copy_in(dest, src, "memcpy_htod"), "")


def memcpy_dtoh(dest, src):
    _need_context("cuMemcpyDtoH")
    counts["dtoh"] += 1
    counts["host_syncs"] += 1
    _trace("sync", "memcpy_dtoh")
    _enqueue(None, _copy_out(dest, src, "memcpy_dtoh"), "")


def memcpy_htod_async(dest, src, stream=None):
    if not _is_pinned(src):            # pageable memory: CUDA copies it before returning
        return memcpy_htod(dest, src)
    _need_context("cuMemcpyHtoDAsync")
    counts["htod"] += 1
    _enqueue(stream, _copy_in(dest, src, "memcpy_htod_async"), "copy in")


def memcpy_dtoh_async(dest, src, stream=None):
    if not _is_pinned(dest):
        return memcpy_dtoh(dest, src)
    _need_context("cuMemcpyDtoHAsync")
    counts["dtoh"] += 1
    _enqueue(stream, _copy_out(dest, src, "memcpy_dtoh_async"), "copy out")


def memcpy_dtod(dest, src, size):
    memcpy_dtod_async(dest, src, size, None)


def memcpy_dtod_async(dest, src, size, stream=None):
    _need_context("cuMemcpyDtoD")
    counts["dtod"] += 1
    a, to = _device(dest, size, "memcpy_dtod")
    _, frm = _device(src, size, "memcpy_dtod")

    def run():
        to[:] = frm
        a.check_guards("memcpy_dtod")
    _enqueue(stream, run, "copy")


def memset_d8(dest, value, count):
    memset_d8_async(dest, value, count, None)


def memset_d8_async(dest, value, count, stream=None):
    _need_context("cuMemsetD8")
    a, view = _device(dest, count, "memset_d8")

    def run():
        view[:] = value
    _enqueue(stream, run, "memset")


def memset_d32(dest, value, count):
    _need_context("cuMemsetD32")
    a, view = _device(dest, 4 * count, "memset_d32")
    _enqueue(None, lambda: view.view(np.uint32).__setitem__(slice(None), value), "")


# --- arguments that copy (PyCUDA's In, Out, InOut) --------------------------------------
class ArgumentHandler:
    def __init__(self, array):
        self.array = array
        self.dev_alloc = None

    def get_device_alloc(self):
        if self.dev_alloc is None:
            self.dev_alloc = mem_alloc_like(self.array)
        return self.dev_alloc

    def pre_call(self, stream):
        pass


class In(ArgumentHandler):
    def pre_call(self, stream):
        memcpy_htod(self.get_device_alloc(), self.array)


class Out(ArgumentHandler):
    def post_call(self, stream):
        memcpy_dtoh(self.array, self.get_device_alloc())


class InOut(In, Out):
    pass


# --- modules and kernels ----------------------------------------------------------------
IMAGE_MAGIC = b"CUDA-SIM-IMAGE\n"


class Module:
    def __init__(self, source, options=()):
        try:
            path, self.signatures, self.shared = kernelc.build(source, options)
        except kernelc.CompileError as exc:
            raise CompileError(str(exc)) from None
        self.lib = ctypes.CDLL(path)
        self.lib.sim_launch.restype = ctypes.c_int
        self.lib.sim_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_uint] * 6 + [
            ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_size_t]
        self.options = tuple(options)

    def get_function(self, name):
        if name not in self.signatures:
            raise LogicError(f"cuModuleGetFunction failed: named symbol not found ({name})")
        return Function(self, name)


def module_from_buffer(image, options=None, message_handler=None):
    """A module from an image made by the simulated nvcc (the kernel source
    and the options it was compiled with); a real cubin cannot run here."""
    _need_context("cuModuleLoadData")
    image = bytes(image)
    if not image.startswith(IMAGE_MAGIC):
        raise LogicError("cuModuleLoadData failed: device kernel image is invalid "
                         "(the simulated driver runs images of its own nvcc, tests/cuda_sim/bin/nvcc)")
    header, _, source = image[len(IMAGE_MAGIC):].partition(b"\n")
    return Module(source.decode(), header.decode().split("\x1f") if header else ())


def module_from_file(path):
    with open(path, "rb") as fh:
        return module_from_buffer(fh.read())


class Function:
    def __init__(self, module, name):
        self.module, self.name = module, name
        self.params = module.signatures[name]
        self._entry = ctypes.cast(getattr(module.lib, f"sim_call_{name}"), ctypes.c_void_p).value
        self.shared_size_bytes = module.shared[name]
        self.max_threads_per_block = MAX_THREADS
        self.num_regs = 32
        self.local_size_bytes = 0

    def get_attribute(self, attribute):
        return {"MAX_THREADS_PER_BLOCK": MAX_THREADS, "SHARED_SIZE_BYTES": self.shared_size_bytes,
                "NUM_REGS": 32, "LOCAL_SIZE_BYTES": 0, "CONST_SIZE_BYTES": 0}[attribute]

    def set_cache_config(self, config):
        pass

    def prepare(self, arg_types):
        return self

    def prepared_call(self, grid, block, *args, shared_size=0):
        return self(*args, grid=grid, block=block, shared=shared_size)

    def prepared_async_call(self, grid, block, stream, *args, shared_size=0):
        return self(*args, grid=grid, block=block, stream=stream, shared=shared_size)

    def _check_launch(self, grid, block, shared):
        block = tuple(block) + (1,) * (3 - len(block))
        grid = tuple(grid) + (1,) * (3 - len(grid))
        if any(int(b) < 1 for b in block) or any(int(g) < 1 for g in grid):
            raise LogicError(f"cuLaunchKernel failed: invalid argument ({self.name}: grid {grid}, block {block})")
        threads = block[0] * block[1] * block[2]
        if threads > MAX_THREADS or block[2] > MAX_BLOCK_Z or max(block[:2]) > 1024:
            raise LaunchError(f"cuLaunchKernel failed: too many resources requested for launch "
                              f"({self.name}: block {block}, {threads} threads; at most {MAX_THREADS})")
        if grid[0] > MAX_GRID_X or grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ:
            raise LogicError(f"cuLaunchKernel failed: invalid argument ({self.name}: grid {grid}; "
                             f"grid y and z are at most {MAX_GRID_YZ})")
        if self.shared_size_bytes + shared > MAX_SHARED:
            raise LaunchError(f"cuLaunchKernel failed: too many resources requested for launch ({self.name}: "
                              f"{self.shared_size_bytes + shared} bytes of shared memory per block; "
                              f"at most {MAX_SHARED})")
        return tuple(map(int, grid)), tuple(map(int, block))

    def _arguments(self, args):
        """(the argument cells, the handlers, the device pointers) after the type checks."""
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.params)} parameters")
        cells, handlers, pointers = [], [], []
        for k, (arg, p) in enumerate(zip(args, self.params)):
            where = f"{self.name}: argument {k} ({p.ctype} {p.name})"
            if p.pointer:
                if isinstance(arg, ArgumentHandler):
                    if np.asarray(arg.array).dtype != p.dtype:
                        raise TypeError(f"{where}: a host array of {np.asarray(arg.array).dtype} for {p.ctype}")
                    handlers.append(arg)
                    address = int(arg.get_device_alloc())
                elif isinstance(arg, DeviceAllocation):
                    address = int(arg)
                elif getattr(arg, "__cuda_array_interface__", None):
                    cai = arg.__cuda_array_interface__
                    if np.dtype(cai["typestr"]) != p.dtype:
                        raise TypeError(f"{where}: device memory of {np.dtype(cai['typestr'])} for {p.ctype}")
                    address = cai["data"][0]
                elif isinstance(arg, (np.uint64, np.uintp)):
                    address = int(arg)
                else:
                    raise TypeError(f"{where}: {type(arg).__name__} where device memory is expected")
                pointers.append((k, address))
                cells.append(np.array([address], np.uint64))
            else:
                if not isinstance(arg, np.generic):
                    raise TypeError(f"{where}: a Python {type(arg).__name__}; kernel scalars must be NumPy-typed "
                                    f"({np.dtype(p.dtype).name})")
                if arg.dtype != p.dtype:
                    raise TypeError(f"{where}: {arg.dtype} for {np.dtype(p.dtype).name}")
                cells.append(np.array([arg], p.dtype))
        return cells, handlers, pointers

    def __call__(self, *args, grid=(1, 1), block=None, stream=None, shared=0, texrefs=(), time_kernel=False):
        if block is None:
            raise ValueError("must specify block size")
        _need_context("cuLaunchKernel")
        grid, block = self._check_launch(grid, block, shared)
        cells, handlers, pointers = self._arguments(args)
        for h in handlers:
            h.pre_call(stream)
        counts["launches"] += 1
        _trace("launch", self.name, grid, block, stream)
        seed = _m.rng.getrandbits(62)

        def run():
            allocs = []
            for k, address in pointers:
                alloc = _allocation_at(address)
                if alloc is None:
                    freed = any(g.address <= address < g.address + g.nbytes for g in _m.graveyard)
                    raise LaunchError(f"{self.name}: argument {k} points to "
                                      f"{'freed' if freed else 'no'} device memory when the kernel runs")
                allocs.append(alloc)
            argv = (ctypes.c_void_p * max(1, len(cells)))(*[c.ctypes.data for c in cells])
            err = ctypes.create_string_buffer(512)
            rc = self.module.lib.sim_launch(self._entry, argv, *grid, *block, seed, err, 512)
            if rc:
                raise LaunchError(f"{self.name}: {err.value.decode()}")
            for alloc in allocs:
                alloc.check_guards(f"kernel {self.name}")
        _enqueue(stream, run, f"kernel {self.name}")
        for h in handlers:
            if hasattr(h, "post_call"):
                h.post_call(stream)
