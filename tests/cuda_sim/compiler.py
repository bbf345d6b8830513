"""A test double of ``pycuda.compiler``: ``compile`` makes an image of the
simulated driver (the source and its options; see bin/nvcc), and
``SourceModule`` loads one, as PyCUDA's do with nvcc and cubins."""
from __future__ import annotations

from . import driver


def compile(source, nvcc="nvcc", options=None, keep=False, no_extern_c=False, arch=None, code=None,   # noqa: A001
            cache_dir=None, include_dirs=(), target="cubin"):
    if not no_extern_c:
        source = 'extern "C" {\n' + source + "\n}\n"
    opts = list(options or ()) + [f"-I{d}" for d in include_dirs or ()]
    return driver.IMAGE_MAGIC + "\x1f".join(opts).encode() + b"\n" + source.encode()


class SourceModule:
    def __init__(self, source, nvcc="nvcc", options=None, keep=False, no_extern_c=False, arch=None, code=None,
                 cache_dir=None, include_dirs=()):
        self.module = driver.module_from_buffer(compile(source, nvcc, options, keep, no_extern_c, arch, code,
                                                        cache_dir, include_dirs))

    def get_function(self, name):
        return self.module.get_function(name)
