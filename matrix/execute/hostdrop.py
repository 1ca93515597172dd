"""Dropping the page cache from the host, for `cold` trials in containers: root, or one grant.

A container never gets the privilege itself: what dropping needs (CAP_SYS_ADMIN and a writable
/proc/sys) would also let it write /proc/sys/kernel/core_pattern, i.e. run a program as root on
the host. So `matrix` drops the cache on the container's request (harness/hostcalls.py): as
root it writes /proc/sys/vm/drop_caches itself; otherwise it runs exactly one fixed command
through sudo, which a sudoers line grants and nothing else (`sudoers_line`, printed and checked
by `matrix doctor`). With neither, no drop is offered and `cold` cells are recorded unsupported.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess

from harness import cache

SUDOERS_FILE = "/etc/sudoers.d/tf-load-matrix"
SUDO_TIMEOUT_S = 60


def drop_command() -> list[str]:
    """The one command a non-root `matrix` runs as root: sysctl setting vm.drop_caches=3."""
    sysctl = shutil.which("sysctl", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/sysctl"
    return [sysctl, "-q", "-w", "vm.drop_caches=3"]


def sudoers_line(user: str | None = None) -> str:
    """The grant of exactly `drop_command`, without a password, for `user` (default: us)."""
    return f"{user or getpass.getuser()} ALL=(root) NOPASSWD: {' '.join(drop_command())}"


def sudo_granted() -> bool:
    """Whether sudo would run `drop_command` for us without a password (`sudo -n -l CMD`
    answers that without running it)."""
    sudo = shutil.which("sudo")
    if sudo is None:
        return False
    try:
        return (
            subprocess.run(
                [sudo, "-n", "-l", *drop_command()], capture_output=True, timeout=SUDO_TIMEOUT_S
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def route() -> str | None:
    """How this host drops the page cache: `root`, `sudo` (the grant), or None (it cannot)."""
    if cache.drop_caches_allowed():
        return "root"
    return "sudo" if sudo_granted() else None


def drop(via: str) -> None:
    """Write back dirty pages and drop the page cache, dentries and inodes, system-wide, by
    the `route` found earlier (`root` or `sudo`)."""
    if via == "root":
        cache.drop_all_caches()
        return
    os.sync()  # sysctl only drops clean pages: what needs writing back is written first
    subprocess.run(
        ["sudo", "-n", *drop_command()], check=True, capture_output=True, timeout=SUDO_TIMEOUT_S
    )
