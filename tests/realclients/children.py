"""The processes a real-client test starts (Xvfb, dbus-daemon, the notification double, Gajim,
tmux's server): each one ours, each stopped by its pid, the last started first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from mdm_harness.waiting import poll_until

log = logging.getLogger(__name__)


def as_user(argv: list[str], home: Path) -> list[str]:
    """``argv`` as an ordinary user: desktop clients refuse to run as root (Gajim: "You must not
    launch gajim as root"), and CI runs as root. Then ``home`` is handed to ``nobody`` too."""
    if os.geteuid() != 0:
        return argv
    user = pwd.getpwnam("nobody")
    for path in [home, *home.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    return [program("setpriv"), f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *argv]


def program(name: str) -> str:
    """The installed program, or a failure saying what installs it (scripts/install does)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: ./scripts/install installs it")
    return path


@dataclass
class Children:
    workdir: Path
    procs: list[tuple[str, asyncio.subprocess.Process]] = field(default_factory=list)
    pids: list[tuple[str, int]] = field(default_factory=list)  # started by a program that exited (tmux)

    async def start(self, name: str, *argv: str, env: dict[str, str] | None = None,
                    pipe: bool = False) -> asyncio.subprocess.Process:
        """``argv`` as our child in a session of its own, stdout piped (``pipe``) or to
        ``<workdir>/<name>.log`` with stderr."""
        with open(self.workdir / f"{name}.log", "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipe else out, stderr=out, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def adopt(self, name: str, pid: int) -> None:
        """A process we caused that is not our child (a daemon that forked): stopped by pid too."""
        self.pids.append((name, pid))

    def log(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        for name, pid in reversed(self.pids):
            await _stop_pid(name, pid)
        self.pids.clear()
        for name, proc in reversed(self.procs):
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    log.warning("%s (pid %s) did not stop after SIGTERM; killing it", name, proc.pid)
                    proc.kill()
                    await proc.wait()
        self.procs.clear()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _stop_pid(name: str, pid: int) -> None:
    """SIGTERM, then SIGKILL: for a process that is not our child (we cannot wait() on it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        try:
            await poll_until(lambda: _gone(pid), 10, f"{name} did not stop")
        except TimeoutError:
            log.warning("%s (pid %s) did not stop after SIGTERM; killing it", name, pid)
            os.kill(pid, signal.SIGKILL)
