"""Who and where we are: environment id, machine metadata, and where an artifact is stored.

Everything here reads the standard library and /proc only. The TensorFlow half of the
environment record is gathered by `harness.probe` in a child process, because the parent must
never import TensorFlow (it would warm the cache the trials are meant to measure).
"""

from __future__ import annotations

import os
import platform
import re
import socket
import sys
from importlib import metadata

_TF_DISTRIBUTIONS = (
    "tensorflow",
    "tensorflow-cpu",
    "tf-nightly",
    "tf-nightly-cpu",
    "tensorflow-intel",
)


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def installed_tensorflow() -> str | None:
    """Version of the TensorFlow distribution installed for this interpreter, without importing."""
    for dist in _TF_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def local_env_id(prefix: str = "local") -> str:
    """A short readable id like `local-tf2.21-py3.11-cpu` for the running interpreter."""
    tf = installed_tensorflow()
    tf_part = f"tf{_major_minor(tf)}" if tf else "tf-none"
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    device = "gpu" if tf and _has_nvidia_device() else "cpu"
    return f"{prefix}-{tf_part}-{py}-{device}"


def _has_nvidia_device() -> bool:
    return os.path.exists("/dev/nvidiactl") and installed_tensorflow_is_gpu()


def installed_tensorflow_is_gpu() -> bool:
    """The `tensorflow-cpu` wheel never uses a GPU; the plain `tensorflow` wheel may."""
    try:
        metadata.version("tensorflow-cpu")
        return False
    except metadata.PackageNotFoundError:
        return True


def in_container() -> bool:
    """True inside Docker/Podman, where I/O paths differ from the host's.

    A marker file alone is not proof (some VM images ship a stray /.dockerenv), so Docker's
    marker also needs a root filesystem that is not a block device, as every engine gives.
    """
    if os.path.exists("/run/.containerenv"):
        return True
    return os.path.exists("/.dockerenv") and not _root_mount_source().startswith("/dev/")


def _mounts() -> list[tuple[str, str, str, str]]:
    """(mount root, mount point, fstype, source) of every mount this process sees."""
    found = []
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                found.append((fields[3], fields[4], tail[0], tail[1]))
    except OSError:
        pass
    return found


_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def container_id() -> str | None:
    """The id of the container this process runs in; None outside one.

    The engine bind-mounts each container's own /etc/hostname from a folder named after the
    container (Docker: /var/lib/docker/containers/<id>/hostname; Podman: …/<id>/userdata/),
    so, unlike the hostname, it tells two containers apart whatever flags started them.
    """
    for root, point, _fstype, _source in _mounts():
        if point == "/etc/hostname":
            found = _CONTAINER_ID.search(root)
            return found.group(0) if found else None
    return None


def _root_mount_source() -> str:
    return next((source for _r, point, _f, source in _mounts() if point == "/"), "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _first_line(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.readline().strip()
    except OSError:
        return ""


def hypervisor() -> str | None:
    """The hypervisor's name when this machine is a virtual machine, else None.

    On a VM the host may keep the guest's disk in its own page cache, which no drop in the guest
    reaches: "cold" is then cold only inside the guest. The CPU's `hypervisor` flag (x86) says
    whether; DMI says which where the VM exposes it ("unknown" where it does not, as on
    Firecracker).
    """
    try:
        with open("/proc/cpuinfo") as handle:
            flagged = any(
                line.startswith("flags") and "hypervisor" in line.split() for line in handle
            )
    except OSError:
        return None
    if not flagged:
        return None
    dmi = [_first_line(f"/sys/class/dmi/id/{name}") for name in ("sys_vendor", "product_name")]
    return " ".join(part for part in dmi if part) or "unknown"


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, object]:
    """Machine facts that do not need TensorFlow."""
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gb": _memory_gb(),
        "hostname": socket.gethostname(),
        "in_container": in_container(),
        "container_id": container_id(),
        "hypervisor": hypervisor(),
    }


def storage_of(path: str) -> dict[str, str]:
    """Filesystem type and kind of storage (host, image-layer, bind-mount, volume, tmpfs)."""
    path = os.path.realpath(path)
    mount_root, mount_point, fstype = "/", "/", "unknown"
    for root, point, kind, _source in _mounts():
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(mount_point):
            mount_root, mount_point, fstype = root, point, kind
    if fstype == "tmpfs":
        kind = "tmpfs"
    elif not in_container():
        kind = "host"
    elif fstype == "overlay":
        kind = "image-layer"
    elif "/volumes/" in mount_root:
        kind = "volume"
    else:
        kind = "bind-mount"
    return {"fstype": fstype, "mount_point": mount_point, "kind": kind}
