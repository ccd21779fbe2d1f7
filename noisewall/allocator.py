"""Keep glibc's allocator from page-faulting bulk relay buffers (tunnel, censor, bench sinks).

With glibc's defaults, a process that allocates and frees buffers of a few
hundred KiB on every read (socket reads, TLS records, Noise messages) can
fall into growing its heap and trimming it back on every read, so that each
new buffer page-faults in fresh zeroed pages. Measured on the lab machine,
that mode costs a tunnel process up to twice the CPU per byte (the
``random`` client: 4.2 vs 2.3 CPU-seconds per GB) and made a benchmark
sink's "direct loopback" 0.4 GB/s in one run and 2.9 GB/s in the next.
Raising the trim and mmap thresholds keeps the memory in the heap for
reuse; the extra resident memory is bounded by the thresholds (tens of MiB).
Long-running relays call :func:`tune_allocator` at start; benchmarks start
child processes that are not ours to change with :data:`MALLOC_ENV`.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: ``mallopt`` parameters (glibc ``malloc.h``) and the values the tunnel uses.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
TUNING = {_M_TRIM_THRESHOLD: 64 << 20, _M_TOP_PAD: 16 << 20, _M_MMAP_THRESHOLD: 16 << 20}

#: The same settings as glibc environment variables, for a child process.
MALLOC_ENV = {
    "MALLOC_TRIM_THRESHOLD_": str(TUNING[_M_TRIM_THRESHOLD]),
    "MALLOC_TOP_PAD_": str(TUNING[_M_TOP_PAD]),
    "MALLOC_MMAP_THRESHOLD_": str(TUNING[_M_MMAP_THRESHOLD]),
}


def tune_allocator() -> bool:
    """Apply :data:`TUNING` with glibc's ``mallopt``; False where that is unavailable."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to tune
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in TUNING.items())
