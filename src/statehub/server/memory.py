"""Giving large buffers back to the operating system when they are freed.

glibc's malloc serves a block of 128 KiB or more with its own ``mmap`` and unmaps it on
``free``, but raises that threshold (up to 32 MiB) every time such a block is freed: after
the first large message, the following ones come from the heap, which it rarely gives
back. A server that wrote a 20 MiB snapshot to 8 clients that never read it then kept
180 MiB after they were dropped. Pinning the threshold keeps large buffers (messages,
snapshots, transport buffers) mapped on their own, so they are returned when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameter for the mmap threshold.
_M_MMAP_THRESHOLD = -3
#: Blocks at least this large are mapped on their own (glibc's initial threshold).
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_large_buffers_to_the_os() -> bool:
    """Pin glibc's mmap threshold; False (nothing done) on another C library."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to pin
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    logger.debug("malloc's mmap threshold pinned at %d bytes: %s", MMAP_THRESHOLD_BYTES, done)
    return done
