"""The simulated driver's compiler: kernel source (with the CUDA prelude)
-> a shared library built by the host C++ compiler, with one entry point
per kernel and each kernel's parameter list as NumPy types."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CXX = os.environ.get("CXX", "g++")
KERNEL = re.compile(r'(?:\bKERNEL|extern\s+"C"\s+__global__)\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?'
                    r'(\w+)\s*\(([^)]*)\)\s*\{')
QUALIFIERS = {"GLOBAL", "LOCAL_PTR", "RESTRICT", "const", "volatile", "__restrict__", "__restrict", "restrict"}
SCALARS = {
    "char": np.int8, "signed char": np.int8, "unsigned char": np.uint8, "bool": np.bool_,
    "short": np.int16, "unsigned short": np.uint16, "int": np.int32, "int32_t": np.int32,
    "unsigned": np.uint32, "unsigned int": np.uint32, "uint32_t": np.uint32,
    "long": np.int64, "long long": np.int64, "long int": np.int64, "int64_t": np.int64, "ptrdiff_t": np.int64,
    "unsigned long": np.uint64, "unsigned long long": np.uint64, "size_t": np.uint64, "uint64_t": np.uint64,
    "float": np.float32, "double": np.float64,
}


class CompileError(RuntimeError):
    """The host compiler refused the kernel source."""


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str          # the C++ type of the parameter, qualifiers but RESTRICT kept out
    pointer: bool
    dtype: np.dtype     # the scalar type, or the type pointed to


def _base_type(words, real):
    text = " ".join(real if w == "real" else w for w in words)
    if text not in SCALARS:
        raise CompileError(f"the simulated driver does not know the kernel parameter type {text!r}")
    return np.dtype(SCALARS[text])


def kernels(source: str) -> dict[str, list[Param]]:
    """name -> parameters of every kernel in ``source`` (the dialect's KERNEL or extern "C" __global__)."""
    typedef = re.search(r"typedef\s+(\w+)\s+real\s*;", source)
    real = typedef.group(1) if typedef else "real"
    found = {}
    for match in KERNEL.finditer(source):
        params = []
        text = match.group(2).strip()
        for k, decl in enumerate(p.strip() for p in text.split(",") if text and text != "void"):
            decl = decl.replace("*", " * ")
            words = decl.split()
            name, type_words = words[-1], words[:-1]
            pointer = "*" in type_words
            base = [w for w in type_words if w not in QUALIFIERS and w != "*"]
            ctype = " ".join(w for w in type_words if w not in {"GLOBAL", "LOCAL_PTR", "RESTRICT", "__restrict__",
                                                                 "__restrict", "restrict"})
            if type_words.count("*") > 1:
                raise CompileError(f"kernel {match.group(1)}: parameter {name}: pointers to pointers are not simulated")
            params.append(Param(name, ctype.replace("real", real), pointer, _base_type(base, real)))
        found[match.group(1)] = params
    return found


def _wrappers(found):
    out = []
    for name, params in found.items():
        call = ", ".join(f"*({p.ctype}*)a[{k}]" for k, p in enumerate(params))
        out.append(f'extern "C" void sim_call_{name}(void** a) {{ (void)a; {name}({call}); }}')
    return "\n".join(out) + "\n"


def cache_dir() -> str:
    path = os.environ.get("CUDA_SIM_CACHE") or os.path.join(tempfile.gettempdir(), f"cuda-sim-{os.getuid()}")
    os.makedirs(path, exist_ok=True)
    return path


def host_flags(options) -> list[str]:
    """nvcc options -> host compiler flags: the defines and include paths,
    and contraction to FMA only where nvcc would contract (its default)."""
    options = list(options or ())
    flags, contract = [], True
    for k, opt in enumerate(options):
        if opt.startswith(("-D", "-I")):
            flags.append(opt if len(opt) > 2 else opt + options[k + 1])
        if opt.replace("-", "").replace("=", " ").split()[:2] in (["fmad", "false"],):
            contract = False
    flags.append("-ffp-contract=fast" if contract else "-ffp-contract=off")
    return flags


def build(source: str, options=()) -> tuple[str, dict[str, list[Param]], dict[str, int]]:
    """(path of the shared library, kernels and their parameters, static
    shared memory bytes per kernel) for ``source``; built once per source,
    options and runtime (cached under cache_dir(), written atomically)."""
    found = kernels(source)
    head = open(os.path.join(HERE, "runtime_head.h"), encoding="utf-8").read()
    tail = open(os.path.join(HERE, "runtime_tail.h"), encoding="utf-8").read()
    flags = ["-std=c++17", "-O2", "-fPIC", "-shared", "-fno-strict-aliasing", "-Wall", "-Wno-unknown-pragmas",
             "-Wno-unused-function", "-Wno-unused-variable", *host_flags(options)]
    text = head + source + "\n#line 1 \"simulator\"\n" + _wrappers(found) + tail
    key = hashlib.sha256((text + "\0" + " ".join(flags) + CXX).encode()).hexdigest()[:24]
    lib = os.path.join(cache_dir(), f"{key}.so")
    if not os.path.exists(lib):
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            src, out = os.path.join(tmp, "k.cpp"), os.path.join(tmp, "k.so")
            with open(src, "w", encoding="utf-8") as fh:
                fh.write(text)
            done = subprocess.run([CXX, *flags, "-o", out, src], capture_output=True, text=True)
            if done.returncode != 0:
                raise CompileError(f"the host compiler refused the kernel source:\n{done.stderr[-4000:]}")
            os.replace(out, lib)
    return lib, found, _static_shared(lib, found)


def _static_shared(lib, found) -> dict[str, int]:
    """Bytes of __shared__ variables per kernel (function statics: _ZZ<len><name>E...)."""
    sizes = dict.fromkeys(found, 0)
    nm = shutil.which("nm")
    if nm is None:
        return sizes
    listing = subprocess.run([nm, "-S", "--defined-only", lib], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) != 4 or not parts[3].startswith("_ZZ"):
            continue
        m = re.match(r"_ZZ(\d+)", parts[3])
        n = int(m.group(1))
        name = parts[3][m.end():m.end() + n]
        if name in sizes:
            sizes[name] += int(parts[1], 16)
    return sizes
