"""Page-cache control and proof: evict, warm, drop everything, and measure residency.

A "cold" number is only honest if the cache state was verified just before the load, so every
trial asks `mincore(2)` how much of the artifact is resident. Eviction uses
`posix_fadvise(DONTNEED)`, which needs no privilege and works on bind mounts and overlayfs, but
only drops clean pages: files are fsynced first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import mmap
import os
import sys
import time
from collections.abc import Iterable

_PAGE = os.sysconf("SC_PAGE_SIZE")
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_MAP_FAILED = ctypes.c_void_p(-1).value
DROP_CACHES = "/proc/sys/vm/drop_caches"  # written to drop the page cache system-wide


def files_of(path: str) -> list[str]:
    """Every regular file of an artifact (a SavedModel is a directory), in a stable order."""
    if os.path.isfile(path):
        return [path]
    found: list[str] = []
    for root, _dirs, names in os.walk(path):
        found.extend(os.path.join(root, n) for n in names)
    return sorted(f for f in found if os.path.isfile(f) and not os.path.islink(f))


def package_files(package: str) -> list[str]:
    """The files an import of `package` reads: shared objects and this interpreter's bytecode.

    Includes the wheel's vendored libraries (`numpy.libs/` beside `numpy/`). Not imported, only
    located: the parent must not warm what it measures. Empty when the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    roots = list(spec.submodule_search_locations or []) if spec else []
    roots += [f"{root}.libs" for root in roots if os.path.isdir(f"{root}.libs")]
    bytecode = f".{sys.implementation.cache_tag}.pyc"
    return [
        f
        for root in roots
        for f in files_of(root)
        if ".so" in os.path.basename(f) or f.endswith(bytecode)
    ]


def _pages(size: int) -> int:
    return (size + _PAGE - 1) // _PAGE


def page_count(files: Iterable[str]) -> int:
    """Pages the files take in the page cache when wholly resident (from their sizes)."""
    return sum(_pages(os.path.getsize(f)) for f in files)


def resident_pages(file: str) -> tuple[int, int]:
    """(resident, total) pages of one file, by mapping it and asking mincore; reads nothing."""
    size = os.path.getsize(file)
    if size == 0:
        return 0, 0
    fd = os.open(file, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), f"mmap failed for {file}")
        try:
            total = _pages(size)
            vec = (ctypes.c_ubyte * total)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore failed for {file}")
            return sum(b & 1 for b in vec), total
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def residency(files: Iterable[str]) -> float:
    """Fraction (0–1) of the files' pages that are in the page cache; 0 for no pages."""
    resident = total = 0
    for file in files:
        r, t = resident_pages(file)
        resident += r
        total += t
    return resident / total if total else 0.0


def evict(files: Iterable[str]) -> None:
    """Drop the files' pages from the page cache (fsync first: dirty pages are not dropped)."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(files: Iterable[str]) -> int:
    """Read every byte sequentially (warms the cache); returns the bytes read."""
    done = 0
    for file in files:
        with open(file, "rb", buffering=0) as handle:
            while chunk := handle.read(1 << 20):
                done += len(chunk)
    return done


def read_in(files: Iterable[str]) -> float:
    """Read every file not wholly in the page cache; the fraction (0–1) resident afterwards.

    mincore first, so a file already resident is not read again: warming a runtime's gigabyte
    of libraries before every trial then costs one residency pass, not a read and a pass
    (0.27 s against 0.55 s for TensorFlow 2.21 here).
    """
    resident = total = 0
    for file in files:
        r, t = resident_pages(file)
        if r < t:
            read_all([file])
            r, t = resident_pages(file)
        resident += r
        total += t
    return resident / total if total else 0.0


def drop_caches_allowed() -> bool:
    """Whether this process may drop the whole page cache (root with a writable /proc/sys).

    Opening for writing fails (EACCES, EROFS) exactly when writing would, and drops nothing.
    """
    try:
        with open(DROP_CACHES, "w"):
            return True
    except OSError:
        return False


def drop_all_caches() -> None:
    """Write back dirty pages, then drop page cache, dentries and inodes system-wide."""
    os.sync()
    with open(DROP_CACHES, "w") as handle:
        handle.write("3\n")


def io_floor(files: list[str]) -> tuple[float | None, float]:
    """Time a plain sequential read of all bytes from an evicted cache.

    Returns (seconds, residency before the read); seconds is None when eviction did not take,
    because then the figure would be a warm read passed off as the I/O floor.
    """
    evict(files)
    before = residency(files)
    if before > COLD_MAX_RESIDENT:
        return None, before
    start = time.perf_counter()
    read_all(files)
    return time.perf_counter() - start, before


# A cold trial with more than this fraction of its artifact resident is recorded `invalid`.
COLD_MAX_RESIDENT = 0.01
# A warm trial with less than this fraction resident is recorded `invalid`.
WARM_MIN_RESIDENT = 0.95
