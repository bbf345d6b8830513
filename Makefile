# Two commands for a newcomer:  make run   and   make test
# Both provision first (.ci/provision.sh: Open MPI + parallel HDF5, .venv,
# mpi4py and h5py built from source against that MPI); quick when already done.

PYTHON  ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
NP      ?= 8
MPIEXEC ?= mpiexec
ARGS    ?=

# Open MPI refuses to start as root and to put more ranks than cores on a
# node unless told; our own commands allow both (see README, "Running MPI").
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
export PRTE_MCA_rmaps_default_mapping_policy := :oversubscribe
# No orte_execute_quiet (it hides mpiexec's own errors) and no
# odls_base_sigkill_timeout: Open MPI 4.1's mpiexec sleeps twice that long
# after every non-zero exit, bad input included (README, "Running MPI yourself").
# hwloc inside mpiexec loads any installed OpenCL driver; PoCL then takes
# SIGUSR1, which mpiexec no longer forwards to the ranks (see README).
export HWLOC_COMPONENTS ?= -opencl
export PYTHON VENV

.PHONY: setup run test test-serial test-mpi test-slurm info bench bench-startup bench-io clean cuda-kernels halo-counts

setup:
	@./.ci/provision.sh

run: setup
	$(MPIEXEC) -n $(NP) $(VPY) -m solver $(ARGS)

info: setup
	$(MPIEXEC) -n 2 $(VPY) -m solver info

test: setup test-serial test-mpi

test-serial:
	$(VPY) -m pytest -q -p no:cacheprovider tests

# -m mpi4py turns an uncaught exception on one rank into MPI_Abort (no hang);
# timeout(1) is the last guard should anything still wedge.
test-mpi:
	timeout 900 $(MPIEXEC) -n 2 $(VPY) -m mpi4py -m pytest -q -p no:cacheprovider --with-mpi -m mpi tests
	timeout 900 $(MPIEXEC) -n 4 $(VPY) -m mpi4py -m pytest -q -p no:cacheprovider --with-mpi -m mpi tests

# The scripts in slurm/ submitted to a private two-node SLURM cluster on this
# machine (slurm/local/cluster.sh: installs slurm-wlm and munge if missing,
# runs every daemon under a temporary directory, stops them all afterwards,
# also when a check fails).  Both "nodes" share this host's /dev/shm, where
# Open MPI's shared-memory transport would mix up ranks of different
# "nodes": the tests use TCP between ranks (a real cluster needs no such
# setting).
test-slurm: setup
	@state=$$(mktemp -d /tmp/solver-slurm.XXXXXX); \
	trap 'slurm/local/cluster.sh stop "'"$$state"'"' EXIT; \
	conf=$$(slurm/local/cluster.sh start "$$state") || exit 1; \
	SLURM_CONF=$$conf OMPI_MCA_btl=self,tcp timeout 900 $(VPY) -m pytest -q -p no:cacheprovider tests/slurm

clean:
	rm -rf runs build *.egg-info .pytest_cache

# The cuda backend's kernel images into kernels/cuda/ (what a package build
# does with nvcc; a GPU node without the toolkit then loads them).
cuda-kernels: setup
	$(VPY) -c "from solver.backends import cuda; print(*cuda.build_images('kernels/cuda'), sep='\n')"

# What one heat halo exchange asks of the device per rank, counted by the
# simulated CUDA driver (tests/cuda_sim; docs/performance.md has the table).
halo-counts: setup
	PYTHONPATH=.:tests $(MPIEXEC) -n 4 $(VPY) -m mpi4py tests/cuda_sim/halo_counts.py --shape 64,64,64 --width 2

# Kernels on 1 and 2 ranks against Devito, REBOUND and the copy bandwidth
# (peers from `pip install .[bench]`), then mpiexec-to-first-step time.
bench: setup
	$(VPY) -m pip install -q -e ".[bench]"
	$(MPIEXEC) -n 2 $(VPY) -m solver bench
	$(VPY) -m solver bench startup

bench-startup: setup
	$(VPY) -m solver bench startup

# Checkpoint cost on the step loop (synchronous vs background) and write bandwidth.
bench-io: setup
	$(MPIEXEC) -n 2 $(VPY) -m solver bench io
