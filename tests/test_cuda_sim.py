"""The simulated CUDA driver itself (tests/cuda_sim): it must catch the
mistakes a GPU would, or it proves nothing about the cuda backend."""
import os
import subprocess

import numpy as np
import pytest

from cuda_sim.fixture import cuda_sim  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(300)

SOURCE = r"""
#include "prelude_cuda.h"
KERNEL void reverse(GLOBAL int* out, GLOBAL const int* in, int n)
{
    LOCAL int tile[256];
    int t = LOCAL_ID(0);
    tile[t] = in[GROUP_ID(0) * LOCAL_SIZE(0) + t];
    BARRIER;
    out[GROUP_ID(0) * LOCAL_SIZE(0) + t] = tile[LOCAL_SIZE(0) - 1 - t];
}
KERNEL void reverse_without_barrier(GLOBAL int* out, GLOBAL const int* in, int n)
{
    LOCAL int tile[256];
    int t = LOCAL_ID(0);
    tile[t] = in[GROUP_ID(0) * LOCAL_SIZE(0) + t];
    out[GROUP_ID(0) * LOCAL_SIZE(0) + t] = tile[LOCAL_SIZE(0) - 1 - t];
}
KERNEL void divergent_barrier(GLOBAL int* out)
{
    if (LOCAL_ID(0) % 2) return;
    BARRIER;
    out[LOCAL_ID(0)] = 1;
}
KERNEL void put(GLOBAL int* p, int v) { *p = v; }
KERNEL void big_shared(GLOBAL double* p) { LOCAL double s[8192]; s[LOCAL_ID(0)] = 1; p[0] = s[0]; }
KERNEL void fill(GLOBAL double* p, long n, double v) { long i = GLOBAL_ID(0); if (i <= n) p[i] = v; }
"""


def _module(sim):
    from solver import kernels
    source = SOURCE.replace('#include "prelude_cuda.h"', kernels.read("prelude_cuda.h"))
    from pycuda.compiler import SourceModule
    return SourceModule(source, no_extern_c=True)


@pytest.fixture
def device(cuda_sim):          # noqa: F811
    import pycuda.driver as drv
    drv.init()
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()
    yield drv, _module(cuda_sim)
    drv.Context.pop()


def test_cuda_sim_barriers_order_shared_memory(device):
    drv, mod = device
    data = np.arange(512, dtype=np.int32)
    out = np.zeros(512, np.int32)
    mod.get_function("reverse")(drv.Out(out), drv.In(data), np.int32(512), block=(256, 1, 1), grid=(2, 1))
    assert np.array_equal(out, np.concatenate([data[255::-1], data[:255:-1]]))
    mod.get_function("reverse_without_barrier")(drv.Out(out), drv.In(data), np.int32(512), block=(256, 1, 1),
                                                grid=(2, 1))
    assert not np.array_equal(out, np.concatenate([data[255::-1], data[:255:-1]]))


def test_cuda_sim_a_barrier_in_divergent_code_fails(device):
    drv, mod = device
    out = drv.mem_alloc(4 * 64)
    with pytest.raises(drv.LaunchError, match="divergent"):
        mod.get_function("divergent_barrier")(out, block=(64, 1, 1), grid=(1, 1))


def test_cuda_sim_grid_y_of_70000_fails(device):
    """CUDA caps grid y and z at 65535: the simulator refuses what a GPU refuses."""
    drv, mod = device
    p = drv.mem_alloc(4)
    with pytest.raises(drv.LogicError, match="grid y and z are at most 65535"):
        mod.get_function("put")(p, np.int32(1), block=(1, 1, 1), grid=(1, 70000))
    with pytest.raises(drv.LogicError, match="65535"):
        mod.get_function("put")(p, np.int32(1), block=(1, 1, 1), grid=(1, 1, 70000))
    mod.get_function("put")(p, np.int32(1), block=(1, 1, 1), grid=(1, 65535))


def test_cuda_sim_launch_limits(device):
    drv, mod = device
    p = drv.mem_alloc(8 * 8192)
    with pytest.raises(drv.LaunchError, match="at most 1024"):
        mod.get_function("put")(p, np.int32(1), block=(1025, 1, 1), grid=(1, 1))
    with pytest.raises(drv.LaunchError, match="at most 1024"):
        mod.get_function("put")(p, np.int32(1), block=(32, 32, 2), grid=(1, 1))
    with pytest.raises(drv.LaunchError, match="shared memory"):
        mod.get_function("big_shared")(p, block=(1, 1, 1), grid=(1, 1))


def test_cuda_sim_arguments_are_checked_against_the_signature(device):
    drv, mod = device
    p = drv.mem_alloc(4)
    put = mod.get_function("put")
    with pytest.raises(TypeError, match="NumPy-typed"):
        put(p, 1, block=(1, 1, 1), grid=(1, 1))
    with pytest.raises(TypeError, match="int64 for int32"):
        put(p, np.int64(1), block=(1, 1, 1), grid=(1, 1))
    with pytest.raises(TypeError, match="float64 for int"):
        mod.get_function("reverse")(drv.Out(np.zeros(4)), drv.In(np.zeros(4, np.int32)), np.int32(4),
                                    block=(4, 1, 1), grid=(1, 1))
    with pytest.raises(TypeError, match="2 arguments for 3"):
        mod.get_function("reverse")(p, p, block=(1, 1, 1), grid=(1, 1))


def test_cuda_sim_guard_bytes_catch_a_write_out_of_bounds(device):
    drv, mod = device
    p = drv.mem_alloc(8 * 10)
    fill = mod.get_function("fill")
    fill(p, np.int64(9), np.float64(1.0), block=(16, 1, 1), grid=(1, 1))       # i <= 9: in bounds
    with pytest.raises(drv.LaunchError, match="out-of-bounds"):
        fill(p, np.int64(10), np.float64(1.0), block=(16, 1, 1), grid=(1, 1))


def test_cuda_sim_freed_memory_is_caught_when_queued_work_runs(device):
    """A kernel queued on a stream, its memory freed before it ran: the
    driver does not promise that cuMemFree waits, so this is a bug."""
    drv, mod = device
    stream = drv.Stream()
    p = drv.mem_alloc(4)
    mod.get_function("put")(p, np.int32(1), block=(1, 1, 1), grid=(1, 1), stream=stream)
    p.free()
    with pytest.raises(drv.LaunchError, match="freed"):
        stream.synchronize()


def test_cuda_sim_streams_defer_work_and_run_in_varying_order(device):
    """Two streams write one word: without an event between them, the
    order varies from run to run; with one, the second always wins."""
    drv, mod = device
    put = mod.get_function("put")
    seen = set()
    out = np.zeros(1, np.int32)
    for _ in range(40):
        a, b = drv.Stream(), drv.Stream()
        p = drv.mem_alloc(4)
        put(p, np.int32(1), block=(1, 1, 1), grid=(1, 1), stream=a)
        put(p, np.int32(2), block=(1, 1, 1), grid=(1, 1), stream=b)
        assert a.queue and b.queue                      # nothing ran yet
        drv.memcpy_dtoh(out, p)                         # the default stream forces both
        seen.add(int(out[0]))
    assert seen == {1, 2}
    for _ in range(20):
        a, b = drv.Stream(), drv.Stream()
        p = drv.mem_alloc(4)
        put(p, np.int32(1), block=(1, 1, 1), grid=(1, 1), stream=a)
        done = drv.Event(drv.event_flags.DISABLE_TIMING).record(a)
        b.wait_for_event(done)
        put(p, np.int32(2), block=(1, 1, 1), grid=(1, 1), stream=b)
        b.synchronize()
        drv.memcpy_dtoh(out, p)
        assert out[0] == 2


def test_cuda_sim_counts_what_the_host_asks(device):
    import cuda_sim
    drv, mod = device
    cuda_sim.reset_counts()
    p = drv.mem_alloc(4)
    host = drv.pagelocked_empty((1,), np.int32)
    s = drv.Stream()
    mod.get_function("put")(p, np.int32(3), block=(1, 1, 1), grid=(1, 1), stream=s)
    drv.memcpy_dtoh_async(host, p, s)
    e = drv.Event(drv.event_flags.DISABLE_TIMING).record(s)
    e.synchronize()
    assert host[0] == 3
    assert cuda_sim.counts["launches"] == 1 and cuda_sim.counts["dtoh"] == 1
    assert cuda_sim.counts["host_syncs"] == 1 and cuda_sim.counts["timed_events"] == 0
    with pytest.raises(drv.LogicError, match="DISABLE_TIMING"):
        e.time_since(e)


def test_cuda_sim_pagelocked_memory_needs_a_context(cuda_sim):     # noqa: F811
    import pycuda.driver as drv
    drv.init()
    with pytest.raises(drv.LogicError, match="context"):
        drv.pagelocked_empty((4,), np.float64)


def test_cuda_sim_nvcc_makes_images_the_driver_runs(device, tmp_path):
    """The simulator's nvcc stands in for the toolkit's on PATH."""
    drv, _ = device
    from solver import kernels
    src = tmp_path / "k.cu"
    src.write_text(SOURCE.replace('#include "prelude_cuda.h"', kernels.read("prelude_cuda.h")))
    subprocess.run(["nvcc", "-fatbin", "--fmad=false", "-o", str(tmp_path / "k.fatbin"), str(src)], check=True,
                   env=os.environ)
    mod = drv.module_from_file(str(tmp_path / "k.fatbin"))
    p = drv.mem_alloc(4)
    out = np.zeros(1, np.int32)
    mod.get_function("put")(p, np.int32(5), block=(1, 1, 1), grid=(1, 1))
    drv.memcpy_dtoh(out, p)
    assert out[0] == 5
    with pytest.raises(drv.LogicError, match="image is invalid"):
        drv.module_from_buffer(b"\x7fELF not an image of the simulator")
