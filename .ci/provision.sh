#!/usr/bin/env bash
# Provision everything solver needs: an MPI library with parallel HDF5, a
# virtual environment in .venv, and mpi4py + h5py built from source against
# that MPI.  Idempotent: a second run on a provisioned machine only checks.
#
# Environment knobs (all optional):
#   MPICC            MPI compiler wrapper to build against (default: mpicc on PATH)
#   HDF5_DIR         prefix of a parallel HDF5 install (default: pkg-config hdf5-openmpi)
#   PYTHON           interpreter used to create .venv (default: python3)
#   VENV             virtual environment directory (default: .venv)
#   SOLVER_WHEEL_CACHE  where built wheels are kept, keyed by MPI and HDF5
#                    (default: ${XDG_CACHE_HOME:-~/.cache}/solver/wheels)
set -euo pipefail

MPI4PY_VERSION=4.1.2
H5PY_VERSION=3.16.0

cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
CACHE_BASE=${SOLVER_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/solver/wheels}

say() { echo "provision: $*" >&2; }
die() { echo "provision: error: $*" >&2; exit 1; }

# --- 1. MPI and parallel HDF5 ------------------------------------------------
need_apt=()
if [ -z "${MPICC:-}" ] && ! command -v mpicc >/dev/null 2>&1; then
    need_apt+=(openmpi-bin libopenmpi-dev)
fi
if [ -z "${HDF5_DIR:-}" ] && ! pkg-config --exists hdf5-openmpi 2>/dev/null; then
    need_apt+=(libhdf5-openmpi-dev pkg-config)
fi
# an OpenCL driver for the opencl backend (PoCL runs the device kernels on the CPU)
if ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        need_apt+=(pocl-opencl-icd ocl-icd-opencl-dev)
    else
        say "no OpenCL driver found: the opencl backend and its tests are skipped (install pocl-opencl-icd)"
    fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing Debian packages: ${need_apt[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || say "apt-get update failed; trying the install anyway"
        apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        die "no MPI compiler or parallel HDF5 found. Load your cluster's MPI and HDF5 modules (so that mpicc is on PATH, or set MPICC and HDF5_DIR), or run this script as root on Debian/Ubuntu to install Open MPI and libhdf5-openmpi-dev."
    fi
fi

MPICC=${MPICC:-$(command -v mpicc)}
[ -x "$MPICC" ] || die "MPICC=$MPICC is not an executable MPI compiler wrapper"
MPI_DESC=$("$MPICC" --showme:version 2>/dev/null || "$MPICC" -show 2>/dev/null || echo unknown)
MPI_LINK=$("$MPICC" --showme:link 2>/dev/null || "$MPICC" -show 2>/dev/null || echo unknown)

if [ -n "${HDF5_DIR:-}" ]; then
    [ -d "$HDF5_DIR" ] || die "HDF5_DIR=$HDF5_DIR is not a directory"
    HDF5_DESC="dir:$HDF5_DIR:$(ls -l "$HDF5_DIR"/lib*/libhdf5.so* 2>/dev/null | md5sum | cut -c1-12)"
    H5PY_ENV=(HDF5_DIR="$HDF5_DIR")
else
    HDF5_DESC="pkg:hdf5-openmpi:$(pkg-config --modversion hdf5-openmpi):$(pkg-config --libs hdf5-openmpi)"
    H5PY_ENV=(HDF5_PKGCONFIG_NAME=hdf5-openmpi)
fi
PY_DESC=$("$PYTHON" -c 'import sys, platform; print(sys.implementation.cache_tag, platform.machine())')
say "MPI: $MPICC ($MPI_DESC)"
say "HDF5: $HDF5_DESC"

KEY=$(printf '%s\n' "$MPI_DESC" "$MPI_LINK" "$HDF5_DESC" "$PY_DESC" \
      "mpi4py=$MPI4PY_VERSION" "h5py=$H5PY_VERSION" | sha256sum | cut -c1-16)
CACHE=$CACHE_BASE/$KEY
mkdir -p "$CACHE"

# --- 2. virtual environment --------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
VPY=$VENV/bin/python

# --- 3. mpi4py and h5py wheels, built once per MPI/HDF5 ----------------------
if ! ls "$CACHE"/mpi4py-"$MPI4PY_VERSION"-*.whl >/dev/null 2>&1; then
    say "building mpi4py $MPI4PY_VERSION against $MPICC (a few minutes, once)"
    env MPICC="$MPICC" CC="$MPICC" "$VPY" -m pip wheel -q --no-cache-dir --no-deps \
        --no-binary mpi4py -w "$CACHE" "mpi4py==$MPI4PY_VERSION"
fi
if ! ls "$CACHE"/h5py-"$H5PY_VERSION"-*.whl >/dev/null 2>&1; then
    say "building h5py $H5PY_VERSION with MPI against $HDF5_DESC (a few minutes, once)"
    # Build without isolation, against the mpi4py wheel just built: an
    # isolated build would compile a second mpi4py from source (slow, and
    # against whatever MPI it finds).
    "$VPY" -m pip install -q --no-deps "$CACHE"/mpi4py-"$MPI4PY_VERSION"-*.whl
    "$VPY" -m pip install -q "Cython>=3,<4" "numpy>=2" pkgconfig "setuptools>=77" wheel
    env CC="$MPICC" HDF5_MPI=ON "${H5PY_ENV[@]}" "$VPY" -m pip wheel -q --no-cache-dir --no-deps \
        --no-build-isolation --no-binary h5py -w "$CACHE" "h5py==$H5PY_VERSION"
fi

# --- 3b. PyCUDA for the cuda backend: an sdist, built once here against
# PyPI's CUDA 12 headers and a generated driver stub (no GPU or driver
# needed); on a GPU machine the real libcuda.so.1 is found instead --------
if [ -z "${SOLVER_NO_PYCUDA:-}" ] && ! ls "$CACHE"/pycuda-*.whl >/dev/null 2>&1; then
    say "building PyCUDA against a CUDA driver stub (a few minutes, once)"
    "$ROOT/.ci/build-pycuda.sh" "$VPY" "$CACHE" "$CACHE/cuda-stub" >/dev/null \
        || say "PyCUDA could not be built: the cuda backend's driver tests will be skipped"
fi

# --- 3c. PETSc and petsc4py for the implicit heat schemes.  PETSc comes from
# the system (Debian's libpetsc-real-dev, built against the same Open MPI, or a
# site's module via PETSC_DIR); petsc4py is built from source against it, once,
# in a throwaway build environment (it needs Cython < 3), and cached ----------
PETSC_DIR=${PETSC_DIR:-/usr/lib/petsc}
if [ -z "${SOLVER_NO_PETSC:-}" ] && [ ! -f "$PETSC_DIR/include/petscversion.h" ] \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian's PETSc (libpetsc-real-dev) for the implicit schemes"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq libpetsc-real-dev >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq libpetsc-real-dev >/dev/null 2>&1; } \
        || say "libpetsc-real-dev could not be installed: implicit schemes will be unavailable"
fi
PETSC_CACHE=
if [ -z "${SOLVER_NO_PETSC:-}" ] && [ -f "$PETSC_DIR/include/petscversion.h" ]; then
    petsc_part() { awk -v k="PETSC_VERSION_$1" '$1=="#define" && $2==k {print $3}' "$PETSC_DIR/include/petscversion.h"; }
    PETSC_VERSION="$(petsc_part MAJOR).$(petsc_part MINOR).$(petsc_part SUBMINOR)"
    # petsc4py's minor version must match PETSc's; 3.18.5 is the last 3.18
    PETSC4PY_VERSION=${PETSC4PY_VERSION:-$(petsc_part MAJOR).$(petsc_part MINOR).*}
    case $PETSC4PY_VERSION in 3.18.\*) PETSC4PY_VERSION=3.18.5 ;; esac
    NUMPY_VERSION=$("$VPY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo 2.4.6)
    PETSC_KEY=$(printf '%s\n' "$(readlink -f "$PETSC_DIR")" "$PETSC_VERSION" "$PETSC4PY_VERSION" "$NUMPY_VERSION" \
                "$(ls -l "$PETSC_DIR"/lib/libpetsc*.so* 2>/dev/null | md5sum)" | sha256sum | cut -c1-12)
    PETSC_CACHE=$CACHE/petsc-$PETSC_KEY
    if ! ls "$PETSC_CACHE"/petsc4py-*.whl >/dev/null 2>&1; then
        say "building petsc4py $PETSC4PY_VERSION against PETSc $PETSC_VERSION in $PETSC_DIR (about 4 minutes, once)"
        BUILD_VENV=$(mktemp -d "${TMPDIR:-/tmp}/solver-petsc4py-build.XXXXXX")
        if "$PYTHON" -m venv "$BUILD_VENV" \
           && "$BUILD_VENV/bin/python" -m pip install -q "numpy==$NUMPY_VERSION" "Cython<3" "setuptools<70" wheel \
           && mkdir -p "$PETSC_CACHE.part" \
           && env PETSC_DIR="$PETSC_DIR" PETSC_ARCH="${PETSC_ARCH:-}" "$BUILD_VENV/bin/python" -m pip wheel -q --no-cache-dir --no-deps \
                  --no-build-isolation --no-binary petsc4py -w "$PETSC_CACHE.part" "petsc4py==$PETSC4PY_VERSION"; then
            rm -rf "$PETSC_CACHE" && mv "$PETSC_CACHE.part" "$PETSC_CACHE"
        else
            rm -rf "$PETSC_CACHE.part"
            say "petsc4py could not be built: implicit schemes will be unavailable (explicit runs are unaffected)"
        fi
        rm -rf "$BUILD_VENV"
    fi
fi

# --- 4. install (skipped when nothing changed) -------------------------------
STAMP=$VENV/.solver-provisioned
WANT="$KEY $(cat pyproject.toml | sha256sum | cut -c1-16) $(ls "$CACHE"/pycuda-*.whl 2>/dev/null | sha256sum | cut -c1-8) $(ls "$PETSC_CACHE"/petsc4py-*.whl 2>/dev/null | sha256sum | cut -c1-8)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    say "installing solver and its dependencies into $VENV"
    "$VPY" -m pip install -q --force-reinstall --no-deps \
        "$CACHE"/mpi4py-"$MPI4PY_VERSION"-*.whl "$CACHE"/h5py-"$H5PY_VERSION"-*.whl
    # the distribution was once named "solver", like an unrelated PyPI package: drop an old install of ours
    if "$VPY" -m pip show solver 2>/dev/null | grep -q "^Location: $VENV\|^Editable project location: $ROOT$"; then
        "$VPY" -m pip uninstall -q -y solver
    fi
    "$VPY" -m pip install -q -e ".[test]"
    if ls "$CACHE"/pycuda-*.whl >/dev/null 2>&1; then
        "$VPY" -m pip install -q "$CACHE"/pycuda-*.whl
        mkdir -p "$VENV/lib/solver-cuda-stub"           # for the tests: see tests/test_kernels.py
        cp -a "$CACHE"/cuda-stub/libcuda.so* "$VENV/lib/solver-cuda-stub/"
    fi
    if [ -n "$PETSC_CACHE" ] && ls "$PETSC_CACHE"/petsc4py-*.whl >/dev/null 2>&1; then
        "$VPY" -m pip install -q --force-reinstall --no-deps "$PETSC_CACHE"/petsc4py-*.whl
    fi
    echo "$WANT" > "$STAMP"
fi

# --- 5. verify ---------------------------------------------------------------
"$VPY" - <<'PY' || die "the environment in .venv is not usable (see above); delete .venv and the wheel cache and run again"
import h5py, mpi4py
from mpi4py import MPI
assert h5py.get_config().mpi, "h5py was built without MPI support"
print("provision: ok: mpi4py %s on %s; h5py %s with MPI (HDF5 %s)" % (
    mpi4py.__version__, MPI.Get_library_version().replace("\x00", "").splitlines()[0].strip(),
    h5py.__version__, h5py.version.hdf5_version))
PY
