"""Keep freed heap memory inside the process, so per-batch tensors do not page-fault on every batch.

Why: glibc serves allocations above its mmap threshold with fresh mmap()ed pages and unmaps them on
free; an emulated batch allocates hundreds of multi-MB tensors, and the first-touch page faults cost up
to ~40 % of the CPU time of an emulated ResNet-32 (bench/RESULTS-runtime.md). PyTorch's CPU tuning
guide suggests jemalloc / tcmalloc for the same reason; mallopt() does it in-process, no preload.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); False where that is not glibc."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # 32 MiB is the largest mmap threshold every glibc accepts; larger blocks keep their own mmap
    ok = mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    _done = ok
    return ok
