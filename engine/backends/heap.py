"""glibc's malloc while onnxruntime loads a graph: freed weight-sized blocks go back to the OS.

Creating a session, onnxruntime reads every weight into memory and then (MLAS prepacking) copies
most MatMul weights into a packed layout and frees the originals. glibc's dynamic mmap threshold
has by then grown past a weight's size (it rises to the size of each mapped block freed), so the
originals sit in the brk heap between blocks still in use and their pages stay resident after
the free: the fp32 musicgen-small ``lm_step`` (1.44 GB of weights) peaked at 1.9-2.2 GB. With
the threshold pinned low while the session is created, every weight is a mapping of its own,
unmapped when freed: the peak is the weights once (1.49 GB; bench/RESULTS_onnx.md).

Pinning the threshold turns glibc's dynamic adjustment off for the process; afterwards it is
left at glibc's own upper bound for that adjustment (32 MB on 64-bit), where a process that
frees large blocks ends up anyway. Elsewhere than glibc this is a no-op.
"""
from __future__ import annotations

import ctypes
import platform
from contextlib import contextmanager
from typing import Callable, Iterator

M_MMAP_THRESHOLD = -3        # mallopt parameter (malloc.h)
LOAD_THRESHOLD = 128 * 1024  # glibc's initial threshold: every weight is mapped on its own
AFTER_THRESHOLD = 32 << 20   # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None under another C library (musl's ignores the threshold)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:  # the process's own symbols: libc is loaded already (no ldconfig look-up)
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


_MALLOPT = _mallopt()


@contextmanager
def weights_returned_on_free() -> Iterator[None]:
    """While inside, blocks of ``LOAD_THRESHOLD`` bytes or more are mmapped, so freeing one
    returns its pages; on leaving, the threshold is ``AFTER_THRESHOLD``."""
    if _MALLOPT is not None:
        _MALLOPT(M_MMAP_THRESHOLD, LOAD_THRESHOLD)
    try:
        yield
    finally:
        if _MALLOPT is not None:
            _MALLOPT(M_MMAP_THRESHOLD, AFTER_THRESHOLD)
