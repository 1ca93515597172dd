"""The cache-state proof on real files: eviction takes, a warm read stays, drop_caches works."""

from __future__ import annotations

import os

import pytest

from harness import cache


@pytest.fixture
def artifact(tmp_path):
    """A 16 MiB file written and still dirty in the page cache, like a fresh save."""
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(16 << 20))
    return [str(path)]


def test_eviction_leaves_at_most_one_percent_resident(artifact):
    cache.read_all(artifact)
    cache.evict(artifact)
    assert cache.residency(artifact) <= cache.COLD_MAX_RESIDENT


def test_warm_read_leaves_everything_resident(artifact):
    cache.evict(artifact)
    cache.read_all(artifact)
    assert cache.residency(artifact) >= 0.99


def _bytes_read_through_read_calls() -> int:
    """rchar: every byte this process got from read(), page cache hits included."""
    with open("/proc/self/io") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("rchar:"))


def test_read_in_reads_only_files_not_wholly_resident(artifact):
    size = os.path.getsize(artifact[0])
    cache.evict(artifact)
    before = _bytes_read_through_read_calls()
    assert cache.read_in(artifact) >= 0.99
    read = _bytes_read_through_read_calls() - before
    assert read >= size
    before = _bytes_read_through_read_calls()
    assert cache.read_in(artifact) >= 0.99  # resident already: mincore says so, nothing read
    assert _bytes_read_through_read_calls() - before < size // 16


def test_io_floor_reads_from_an_evicted_cache(artifact):
    seconds, resident_before = cache.io_floor(artifact)
    assert resident_before <= cache.COLD_MAX_RESIDENT
    assert seconds is not None and seconds > 0
    assert cache.residency(artifact) >= 0.99  # the timed read really read the bytes


def test_directory_artifacts_list_every_file(tmp_path):
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"x" * 10)
    (tmp_path / "variables" / "variables.index").write_bytes(b"y" * 10)
    assert [os.path.basename(f) for f in cache.files_of(str(tmp_path))] == [
        "saved_model.pb",
        "variables.index",
    ]


def test_drop_caches_matches_its_permission(artifact):
    """As root on the host (here and in CI) the whole cache drops; elsewhere opening refuses."""
    cache.read_all(artifact)
    if cache.drop_caches_allowed():
        cache.drop_all_caches()
        assert cache.residency(artifact) <= cache.COLD_MAX_RESIDENT
    else:
        with pytest.raises(OSError):
            cache.drop_all_caches()


def test_package_files_are_the_libraries_and_bytecode_an_import_reads():
    """Found without importing: numpy's own and vendored shared objects and its bytecode."""
    files = cache.package_files("numpy")
    names = [os.path.basename(f) for f in files]
    assert any(".so" in n for n in names) and any(n.endswith(".pyc") for n in names)
    assert all(".so" in n or n.endswith(".pyc") for n in names)
    assert cache.package_files("no_such_package_anywhere") == []
