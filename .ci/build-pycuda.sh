#!/usr/bin/env bash
# Build a PyCUDA wheel on a machine without a GPU or a CUDA driver, for CI:
# against the CUDA 12 headers of PyPI wheels (cuda.h from
# nvidia-cuda-runtime-cu12, cudaProfiler.h from nvidia-cuda-profiler-api-cu12;
# CUDA 13's headers would need a newer driver on the GPU machines), linked
# against a stub libcuda.so.1 generated from cuda.h, in which every driver
# entry point returns CUDA_ERROR_STUB_LIBRARY (an empty stub fails at import).
# With the stub loaded, `cuda.init()` raises PyCUDA's LogicError; on a GPU
# machine the real libcuda.so.1 is found instead.
#
#   .ci/build-pycuda.sh PYTHON WHEEL_DIR STUB_DIR
#
# Skips what is already there.  Needs a C compiler; curand is off.
set -euo pipefail
PY=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
WHEELS=$(mkdir -p "$2" && cd "$2" && pwd) STUB=$(mkdir -p "$3" && cd "$3" && pwd)
PYCUDA_VERSION=${PYCUDA_VERSION:-2026.1}
say() { echo "build-pycuda: $*" >&2; }

work=$(mktemp -d /tmp/solver-pycuda.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$WHEELS" "$STUB"

"$PY" -m pip download -q --no-deps -d "$work/dl" nvidia-cuda-runtime-cu12 nvidia-cuda-profiler-api-cu12
for w in "$work"/dl/*.whl; do "$PY" -m zipfile -e "$w" "$work/headers"; done
inc_rt=$work/headers/nvidia/cuda_runtime/include
inc_prof=$work/headers/nvidia/cuda_profiler_api/include
[ -f "$inc_rt/cuda.h" ] && [ -f "$inc_prof/cudaProfiler.h" ] || { say "cuda.h or cudaProfiler.h missing from the wheels"; exit 1; }

if [ ! -f "$STUB/libcuda.so.1" ]; then
    say "generating the libcuda stub from cuda.h and cudaProfiler.h"
    # the exported names are those after cuda.h's versioning macros (cuCtxCreate -> cuCtxCreate_v2)
    names=$(printf '#include <cuda.h>\n#include <cudaProfiler.h>\n' | cc -E -I"$inc_rt" -I"$inc_prof" - \
            | tr '\n' ' ' | grep -oE '\bCUresult +[A-Za-z0-9_]+ *\(' | sed -E 's/^CUresult +//; s/ *\($//' | sort -u)
    {
        echo "/* generated from cuda.h: every driver entry point reports CUDA_ERROR_STUB_LIBRARY (34), */"
        echo "/* but the error strings, which callers (PyCUDA) read whatever the return value */"
        for n in $names; do
            case $n in cuGetErrorString|cuGetErrorName) ;; *) echo "int $n(void) { return 34; }" ;; esac
        done
        echo 'int cuGetErrorName(int e, const char **s) { *s = e == 34 ? "CUDA_ERROR_STUB_LIBRARY" : "CUDA_ERROR_UNKNOWN"; return 0; }'
        echo 'int cuGetErrorString(int e, const char **s) { *s = e == 34 ? "CUDA driver is a stub library: no GPU driver on this machine" : "unknown error (CUDA driver stub)"; return 0; }'
    } > "$work/stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB/libcuda.so.1" "$work/stub.c"
    ln -sf libcuda.so.1 "$STUB/libcuda.so"
    say "stub with $(echo "$names" | wc -w) entry points in $STUB"
fi

if ! ls "$WHEELS"/pycuda-"$PYCUDA_VERSION"-*.whl >/dev/null 2>&1; then
    say "building PyCUDA $PYCUDA_VERSION (a few minutes, once)"
    "$PY" -m pip download -q --no-deps --no-binary pycuda -d "$work/src" "pycuda==$PYCUDA_VERSION"
    tar xzf "$work"/src/pycuda-*.tar.gz -C "$work/src"
    (cd "$work"/src/pycuda-*/ &&
     "$PY" configure.py --cuda-root="$work/headers/nvidia/cuda_runtime" \
         --cuda-inc-dir="$inc_rt,$inc_prof" \
         --cudadrv-lib-dir="$STUB" --no-cuda-enable-curand >/dev/null &&
     "$PY" -m pip wheel -q --no-deps --no-cache-dir -w "$WHEELS" .)
fi
ls "$WHEELS"/pycuda-"$PYCUDA_VERSION"-*.whl
