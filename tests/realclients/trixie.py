"""Gajim 2.x (Debian 13 "trixie"'s package) for the R3.8 tests: a trixie root made once with
``mmdebstrap`` under /var/cache/open-mdm (Debian's packages, about 2 minutes, then reused), and
a client run in it: ``unshare --mount`` gives it a mount namespace of its own where the test's
directory and the X socket are bind-mounted, /proc and /dev/shm mounted into the root, so every mount ends with the
process (nothing to unmount, nothing left behind) and the process is stopped by its pid."""

from __future__ import annotations

import asyncio
import fcntl
import shutil
from pathlib import Path

from .children import program

ROOT = Path("/var/cache/open-mdm/trixie-gajim")
PACKAGES = "gajim"
BUILD_TIMEOUT = 900.0

# sh -c SCRIPT sh CHROOT WORKDIR ROOT ARGV...: mounts in the new namespace, then the client in the root
MOUNT_AND_RUN = """set -e
chroot=$1 workdir=$2 root=$3; shift 3
mount --bind "$workdir" "$root$workdir"
mount --bind /tmp/.X11-unix "$root/tmp/.X11-unix"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
exec "$chroot" "$root" "$@"
"""


async def ensure_root() -> Path:
    """The trixie root with Gajim, built if missing (into a temp dir, renamed when complete; a
    lock keeps two test runs from building it at once)."""
    ROOT.parent.mkdir(parents=True, exist_ok=True)
    with open(ROOT.parent / "trixie-gajim.lock", "w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        if (ROOT / "usr" / "bin" / "gajim").exists():
            return ROOT
        building = ROOT.with_name(ROOT.name + ".tmp")
        shutil.rmtree(building, ignore_errors=True)
        proc = await asyncio.create_subprocess_exec(
            program("mmdebstrap"), "--variant=minbase", f"--include={PACKAGES}", "trixie", str(building),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), BUILD_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"mmdebstrap trixie failed:\n{out.decode(errors='replace')[-3000:]}")
        building.rename(ROOT)
        return ROOT


def in_root(root: Path, workdir: Path, argv: list[str]) -> list[str]:
    """``argv`` run inside ``root`` with ``workdir`` (the client's home, the D-Bus socket) at the
    same path, and the X server's socket. The mount points are made here and stay empty."""
    (root / workdir.relative_to("/")).mkdir(parents=True, exist_ok=True)
    (root / "tmp" / ".X11-unix").mkdir(parents=True, exist_ok=True)
    (root / "dev" / "shm").mkdir(parents=True, exist_ok=True)  # Python's multiprocessing locks
    return [program("unshare"), "--mount", "--", "sh", "-c", MOUNT_AND_RUN, "sh",
            program("chroot"), str(workdir), str(root), *argv]


def release(root: Path, workdir: Path) -> None:
    """Remove the (empty) mount point made for ``workdir``."""
    point = root / workdir.relative_to("/")
    if point.is_dir() and not any(point.iterdir()):
        point.rmdir()
