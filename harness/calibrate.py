"""How fast is this machine right now? A fixed CPU-bound kernel, timed in the environment.

Load times move with the machine (a shared VM drifts ±20 % over a day, as much as `matrix compare`
flags), so each run times the same single-threaded work at its start (`calibration_s`) and end
(`calibration_end_s`): a comparison can tell a slower machine from slower code. Standard library
only (Python 3.8+).
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
import zlib

REPEATS = 7  # timed runs of the kernel; their median is the figure (one stall does not move it)
_BUFFER_BYTES = 256 * 1024
_SEED = 20261127
_ROUNDS = 4  # compress-and-hash rounds per timed run: ~30 ms on a 2020s x86 core
_WORDS = 4096  # distinct 8-byte words the buffer is drawn from: compressible, like real data


def _buffer() -> bytes:
    """The same bytes on every machine and Python: seeded words, repeated irregularly."""
    rng = random.Random(_SEED)
    words = [bytes(rng.getrandbits(8) for _ in range(8)) for _ in range(_WORDS)]
    return b"".join(rng.choice(words) for _ in range(_BUFFER_BYTES // 8))


def _kernel(data: bytes) -> bytes:  # pure CPU and memory bandwidth, in C every Python ships
    """Compress and hash the buffer, each round's digest salting the next (no round can be
    skipped or cached)."""
    digest = b""
    for _ in range(_ROUNDS):
        digest = hashlib.sha256(zlib.compress(digest + data, 6)).digest()
    return digest


def calibration_s(repeats: int = REPEATS) -> float:
    """Median wall time (s) of one run of the kernel, after one untimed run that warms the
    caches; about 0.3 s in all on a 2020s x86 core."""
    data = _buffer()
    _kernel(data)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _kernel(data)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 6)
