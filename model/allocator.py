"""Keeping freed memory for reuse during training, instead of handing it back to the kernel after every step.

A training step allocates and frees the same activation buffers, most of them megabytes, over and over. glibc
serves a block of 128 KB or more (a threshold it raises as such blocks are freed) with a fresh ``mmap`` and unmaps
it on free, and trims the top of the heap once 128 KB of it are free, so the next step faults every page in again
and the kernel zeroes it: about 95,000 page faults per step of batch 64 on the 2-core training machine, 15-35% of the
step's time (``bench/train_step.py``). ``reuse_freed_memory`` raises both thresholds with ``mallopt``: blocks up
to 32 MiB come from the heap, and up to 1 GiB of freed heap is kept. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 2**30


def reuse_freed_memory() -> dict[str, int] | None:
    """Raise glibc's mmap and trim thresholds for this process (and processes forked after); the settings made, or
    None where the C library has no ``mallopt`` or refuses them."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("no mallopt in the C library (%s); allocator left as it is", name)
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        log.info("mallopt refused the thresholds; allocator left as it is")
        return None
    return {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
