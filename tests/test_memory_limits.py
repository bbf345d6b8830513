"""The memory a run may use, read from fake /proc and /sys trees: cgroup v1
and v2 limits on the process's own cgroup and on those above it."""
import os

import pytest

from solver.parallel.memory import available_memory, cgroup_available

pytestmark = pytest.mark.timeout(30)

MiB = 1 << 20
GiB = 1 << 30
V1_UNLIMITED = "9223372036854771712"
V1_MOUNT = "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory\n"
V2_MOUNT = "29 25 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
MEMINFO = f"MemTotal:       {64 * GiB // 1024} kB\nMemAvailable:   {32 * GiB // 1024} kB\n"


def tree(root, cgroup=None, mountinfo=None, meminfo=MEMINFO, **files):
    """A fake root: /proc/self/cgroup, /proc/self/mountinfo, /proc/meminfo
    and ``files`` (path relative to the root, with __ for /) -> content."""
    content = {"proc/self/cgroup": cgroup, "proc/self/mountinfo": mountinfo, "proc/meminfo": meminfo}
    content.update({k.replace("__", "/"): v for k, v in files.items()})
    for rel, text in content.items():
        if text is None:
            continue
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(str(text))
    return str(root)


def write(root, rel, **values):
    """cgroup files in directory ``rel`` of the fake root: memory_max -> memory.max."""
    directory = os.path.join(root, rel)
    os.makedirs(directory, exist_ok=True)
    for name, text in values.items():
        with open(os.path.join(directory, name.replace("_", ".", 1)), "w") as fh:
            fh.write(f"{text}\n")


def test_v1_limit_of_a_slurm_job_cgroup(tmp_path):
    """A 180 MiB job cgroup with unlimited step and root cgroups above and below."""
    root = tree(tmp_path, cgroup="12:memory:/slurm/uid_0/job_7/step_0\n4:cpu,cpuacct:/slurm/uid_0/job_7\n0::/\n",
                mountinfo=V2_MOUNT.replace("/sys/fs/cgroup ", "/sys/fs/cgroup/unified ") + V1_MOUNT)
    base = "sys/fs/cgroup/memory"
    write(root, base, memory_limit_in_bytes=V1_UNLIMITED, memory_usage_in_bytes=5 * GiB)
    write(root, f"{base}/slurm/uid_0/job_7", memory_limit_in_bytes=180 * MiB, memory_usage_in_bytes=30 * MiB)
    write(root, f"{base}/slurm/uid_0/job_7/step_0", memory_limit_in_bytes=V1_UNLIMITED,
          memory_usage_in_bytes=20 * MiB)
    assert cgroup_available(root) == 150 * MiB
    assert available_memory(root) == 150 * MiB


def test_v1_mount_point_and_root_come_from_mountinfo(tmp_path):
    """A container's view: the memory controller mounted elsewhere, showing
    the hierarchy from the container's cgroup down."""
    root = tree(tmp_path, cgroup="5:memory:/docker/abc/inner\n",
                mountinfo="40 30 0:30 /docker/abc /mnt/cg\\040mem rw - cgroup cgroup rw,memory\n")
    write(root, "mnt/cg mem", memory_limit_in_bytes=2 * GiB, memory_usage_in_bytes=GiB)
    write(root, "mnt/cg mem/inner", memory_limit_in_bytes=V1_UNLIMITED, memory_usage_in_bytes=GiB)
    write(root, "sys/fs/cgroup/memory", memory_limit_in_bytes=MiB, memory_usage_in_bytes=0)   # not the mount
    assert cgroup_available(root) == GiB


def test_v1_usual_mount_point_without_mountinfo(tmp_path):
    root = tree(tmp_path, cgroup="9:memory:/job\n")
    write(root, "sys/fs/cgroup/memory/job", memory_limit_in_bytes=300 * MiB, memory_usage_in_bytes=100 * MiB)
    assert cgroup_available(root) == 200 * MiB


def test_v2_nested_limits_take_the_tightest(tmp_path):
    root = tree(tmp_path, cgroup="0::/system.slice/slurmstepd.scope/job_3/step_0/user/task_0\n", mountinfo=V2_MOUNT)
    base = "sys/fs/cgroup/system.slice/slurmstepd.scope"
    write(root, "sys/fs/cgroup", memory_current=40 * GiB)                       # the root has no memory.max
    write(root, "sys/fs/cgroup/system.slice", memory_max="max", memory_current=10 * GiB)
    write(root, f"{base}/job_3", memory_max=GiB, memory_current=700 * MiB)      # the tightest: 324 MiB left
    write(root, f"{base}/job_3/step_0", memory_max=2 * GiB, memory_current=600 * MiB)
    write(root, f"{base}/job_3/step_0/user/task_0", memory_max="max", memory_current=500 * MiB)
    assert cgroup_available(root) == 324 * MiB
    assert available_memory(root) == 324 * MiB


def test_max_everywhere_leaves_meminfo(tmp_path):
    root = tree(tmp_path, cgroup="0::/a/b\n", mountinfo=V2_MOUNT)
    write(root, "sys/fs/cgroup/a", memory_max="max", memory_current=GiB)
    write(root, "sys/fs/cgroup/a/b", memory_max="max", memory_current=GiB)
    assert cgroup_available(root) is None
    assert available_memory(root) == 32 * GiB


def test_missing_files(tmp_path):
    """No usage file: the limit alone bounds it; no cgroup file: the roots,
    as inside a container; nothing at all: None."""
    root = tree(tmp_path / "a", cgroup="0::/job\n", mountinfo=V2_MOUNT)
    write(root, "sys/fs/cgroup/job", memory_max=3 * GiB)
    assert cgroup_available(root) == 3 * GiB
    root = tree(tmp_path / "b")
    write(root, "sys/fs/cgroup", memory_max=GiB, memory_current=GiB // 4)
    assert available_memory(root) == 3 * GiB // 4
    root = tree(tmp_path / "c", meminfo=None)
    assert available_memory(root) is None


def test_limit_below_meminfo_and_meminfo_below_limit(tmp_path):
    root = tree(tmp_path, cgroup="0::/job\n", mountinfo=V2_MOUNT,
                meminfo=f"MemAvailable:   {GiB // 1024} kB\n")
    write(root, "sys/fs/cgroup/job", memory_max=8 * GiB, memory_current=0)
    assert available_memory(root) == GiB


def test_inactive_page_cache_counts_as_available(tmp_path):
    root = tree(tmp_path, cgroup="0::/job\n", mountinfo=V2_MOUNT)
    write(root, "sys/fs/cgroup/job", memory_max=GiB, memory_current=800 * MiB,
          memory_stat=f"anon {300 * MiB}\nfile {500 * MiB}\ninactive_file {400 * MiB}\n")
    assert cgroup_available(root) == 624 * MiB


def test_cgroup_outside_the_namespace_reads_the_mount_root(tmp_path):
    root = tree(tmp_path, cgroup="0::/../../elsewhere\n", mountinfo=V2_MOUNT)
    write(root, "sys/fs/cgroup", memory_max=2 * GiB, memory_current=GiB)
    assert cgroup_available(root) == GiB


def test_this_machine_reports_something():
    n = available_memory()
    assert n is None or n >= 0
