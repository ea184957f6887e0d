"""A desktop for a real GUI client (R3.8): Xvfb, a private D-Bus session bus and a
notification-daemon double on it (notify_daemon.py) that reports every ``Notify`` call.

    async with desktop_session(workdir) as desktop:
        ... start a client with desktop.env ...
        await desktop.wait_notifications(lambda shown: len(shown) == 3)
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from .children import Children, program

DOUBLE = Path(__file__).with_name("notify_daemon.py")
# Debian's python3 with python3-dbus and python3-gi (scripts/install), not the virtualenv's
SYSTEM_PYTHON = "/usr/bin/python3"
TIMEOUT = 20.0

# A session bus with no service activation: nothing starts behind the test's back (no real
# notification daemon, no dconf), so the double is the only notification service there is.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class Desktop:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children = Children(workdir)
        self.env: dict[str, str] = {}
        self.shown: list[dict[str, object]] = []  # each Notify call, in order
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def stop(self, *, keep: bool = False) -> None:
        """Every process stopped by pid; the directory removed unless ``keep`` (after a failure
        the clients' logs are there)."""
        await self.children.stop()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def start(self) -> None:
        xvfb = await self.children.start("xvfb", program("Xvfb"), "-displayfd", "1", "-screen", "0",
                                         "1280x1024x24", "-nolisten", "tcp", pipe=True)
        assert xvfb.stdout is not None
        display = (await asyncio.wait_for(xvfb.stdout.readline(), TIMEOUT)).decode().strip()
        if not display:
            raise RuntimeError(f"Xvfb did not start:\n{self.children.log('xvfb')}")
        self.workdir.chmod(0o755)  # the client may run as another user (children.as_user)
        socket = self.workdir / "bus"
        config = self.workdir / "bus.conf"
        config.write_text(BUS_CONFIG.format(socket=socket))
        bus = await self.children.start("dbus", program("dbus-daemon"), f"--config-file={config}",
                                        "--nofork", "--print-address=1", pipe=True)
        assert bus.stdout is not None
        address = (await asyncio.wait_for(bus.stdout.readline(), TIMEOUT)).decode().strip()
        if not address:
            raise RuntimeError(f"dbus-daemon did not start:\n{self.children.log('dbus')}")
        home = self.workdir / "home"
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "DISPLAY": f":{display}", "DBUS_SESSION_BUS_ADDRESS": address,
            "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_CACHE_HOME": str(home / ".cache"), "XDG_STATE_HOME": str(home / ".local/state"),
            "XDG_RUNTIME_DIR": str(home / "runtime"),
            # no accessibility bus, no dconf, no gvfs: nothing else on the bus
            "NO_AT_BRIDGE": "1", "GSETTINGS_BACKEND": "memory", "GIO_USE_VFS": "local",
        }
        home.mkdir(exist_ok=True)
        (home / "runtime").mkdir(mode=0o700, exist_ok=True)
        double = await self.children.start("notify-double", SYSTEM_PYTHON, str(DOUBLE), env=self.env, pipe=True)
        assert double.stdout is not None
        ready = await asyncio.wait_for(double.stdout.readline(), TIMEOUT)
        if b"ready" not in ready:
            raise RuntimeError(f"the notification double did not start:\n{self.children.log('notify-double')}")
        self._reader = asyncio.create_task(self._read(double.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            async with self._changed:
                self.shown.append(json.loads(line))
                self._changed.notify_all()

    async def wait_notifications(self, condition: Callable[[list[dict[str, object]]], bool],
                                 timeout: float = TIMEOUT) -> list[dict[str, object]]:
        """Until ``condition(shown)`` holds for the popups shown so far (an event, not a delay)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: condition(self.shown)), timeout)
            except TimeoutError:
                raise AssertionError(f"popups shown: {self.shown}") from None
        return list(self.shown)


@asynccontextmanager
async def desktop_session(workdir: Path) -> AsyncIterator[Desktop]:
    desktop = Desktop(workdir)
    failed = False
    try:
        await desktop.start()
        yield desktop
    except BaseException:
        failed = True
        raise
    finally:
        await desktop.stop(keep=failed)
