"""A terminal for a real terminal client (R3.8): a tmux server of the test's own (its socket in
the test's directory), every byte the pane writes kept through ``pipe-pane`` (the bell is a byte
there), the client run as an ordinary user, and tmux's server and the client stopped by pid."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

from .children import Children, as_user, program

# OSC sequences (a terminal title) end with BEL too: only a bare BEL is a beep
OSC = re.compile(rb"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


class Terminal:
    def __init__(self, workdir: Path, env: dict[str, str], children: Children) -> None:
        self.workdir = workdir
        self.env = {**env, "TERM": "screen"}
        self.children = children
        self.socket = workdir / "tmux.sock"
        self.screen_file = workdir / "screen.out"

    async def _tmux(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            program("tmux"), "-S", str(self.socket), "-f", "/dev/null", *args, env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {out.decode(errors='replace')}")
        return out.decode().strip()

    async def start(self, name: str, argv: list[str], home: Path) -> None:
        """``argv`` in a 160x48 pane, as an ordinary user whose home is ``home``."""
        # the pane first runs cat, so that pipe-pane is in place before the client writes a byte
        await self._tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "48", "cat")
        self.children.adopt("tmux server", int(await self._tmux("display-message", "-p", "#{pid}")))
        await self._tmux("pipe-pane", "-t", name, "-o", f"cat >> {self.screen_file}")
        self.workdir.chmod(0o755)  # the client may run as another user (children.as_user)
        await self._tmux("respawn-pane", "-k", "-t", name, shlex.join(as_user(argv, home)))
        self.children.adopt(name, int(await self._tmux("display-message", "-p", "-t", name, "#{pane_pid}")))

    def screen(self) -> bytes:
        return self.screen_file.read_bytes() if self.screen_file.exists() else b""

    def text(self) -> str:
        return self.screen().decode(errors="replace")[-3000:]

    def beeps(self) -> int:
        return OSC.sub(b"", self.screen()).count(b"\x07")
