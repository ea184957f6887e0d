"""``mdm-component`` as a process of its own, or in the component image's container, driven as
scenarios drive the in-process one (component_control.py).

It is started from the scenario's settings written as its TOML file and driven the way an admin
drives it: SIGTERM stops it, SIGKILL crashes it (R9.6: the bridges fail open), SIGSTOP hangs it
with its link open and SIGCONT lets it go on (R2.4: the bridges' ack timeout), and SIGHUP reloads
the file a ``Component sets`` step rewrote (R1.2). The barriers read its admin API on loopback
with the run's token: ``/status.json`` (serving, which bridges reported their sessions, the live
settings) and ``/sessions.json?user=`` (each device: background, hibernated; push registration).

``control_for`` picks the component for a server: in its image's container for the docker
backends (issue 16: the images run for real, the component's included), as a process when asked,
else in the harness's event loop.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import aiohttp

from mdm.config import live_values
from mdm.jid import bare

from .component_control import ComponentControl, ControlledComponent, SessionView, assignment, settings_toml
from .faults import ComponentProcess
from .servers import ServerHandle
from .servers.kinds import kind_of
from .waiting import poll_until

# How long one admin API request may take: on loopback it answers in milliseconds, unless the
# process is stopped (SIGSTOP), which the control knows and refuses to ask.
REQUEST_TIMEOUT = 10.0


class RemoteComponentControl(ControlledComponent):
    def __init__(self, server: ServerHandle, make: Callable[[str, int], ComponentProcess]) -> None:
        """``make(toml, metrics_port)``: a ComponentProcess (or DockerComponent) with that config."""
        super().__init__(server)
        self._make = make
        self.process: ComponentProcess | None = None
        self._paused = False
        self._http: aiohttp.ClientSession | None = None

    # --- what scenarios do -------------------------------------------------------------------

    async def start(self, timeout: float = 60.0) -> None:
        if self.process is not None and await self.process.running():
            raise RuntimeError("component already running")
        process = self.process = self._make(settings_toml(self.settings), self.config.metrics_port)
        await process.start()
        domain, nodes = self.server.domain, self._expected_nodes()

        async def synced() -> bool:
            if not await process.running():
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            state = await self._fetch("/status.json")
            if state is None or not state["active"]:
                return False
            reported = state["synced"].get(domain)
            return reported is not None and nodes <= set(reported)
        try:
            await poll_until(synced, timeout, f"the component did not connect and sync within {timeout}s")
        except TimeoutError as e:
            await self.stop()
            raise RuntimeError(f"{e}; its log:\n{process.log_tail()}\nserver log:\n{self.server.log_tail()}") \
                from None

    async def stop(self) -> None:
        """SIGTERM: it closes its link and ends (a stopped one is woken first)."""
        process, self.process = self.process, None
        try:
            if process is not None:
                if self._paused:
                    await process.signal(signal.SIGCONT)
                await process.stop()
        finally:
            self._paused = False
            if self._http is not None:
                await self._http.close()
                self._http = None

    async def crash(self) -> None:
        """SIGKILL: the kernel closes its link; nothing it read is answered."""
        process, self.process = self.process, None
        self._paused = False
        if process is not None:
            await process.kill()

    async def pause(self) -> None:
        await self._running().signal(signal.SIGSTOP)
        self._paused = True

    async def resume(self) -> None:
        await self._running().signal(signal.SIGCONT)
        self._paused = False

    async def set(self, text: str) -> None:
        """The file rewritten, SIGHUP; done when /status.json shows the new values."""
        self._refuse_if_paused("reload")
        self.settings, self.config = assignment(self.settings, text)
        if self.process is None:
            return  # read at the next start
        process = self._running()
        await self._check_alive()
        process.config_path.write_text(settings_toml(self.settings))
        await process.signal(signal.SIGHUP)
        want = live_values(self.config)

        async def reloaded() -> bool:
            return (await self._get("/status.json"))["config"] == want
        await poll_until(reloaded, 10.0, f"the component did not apply {text!r} after SIGHUP:\n{process.log_tail()}")

    # --- what the barriers read ----------------------------------------------------------------

    async def serving(self) -> bool:
        if self.process is None:
            return False  # stopped or crashed by a step
        await self._check_alive()
        if self._paused:
            return True  # hung, its link open
        return bool((await self._get("/status.json"))["connected"])

    async def session(self, jid: str) -> SessionView | None:
        state = await self._user(bare(jid))
        for s in state["sessions"] if state["connected"] else ():
            if s["jid"] == jid:
                return SessionView(s["jid"], s["inactive"], s["phantom"])
        return None

    async def sees_inactive(self, jid: str) -> bool:
        """As ControlledComponent's, in one request (barriers poll it every few ms)."""
        if self.process is None:
            return True
        state = await self._user(bare(jid))
        return not state["connected"] or any(s["jid"] == jid and s["inactive"] for s in state["sessions"])

    async def push_registered(self, user: str) -> bool:
        state = await self._user(user)
        return bool(state["connected"] and state["push"])

    # --- the admin API -------------------------------------------------------------------------

    def _running(self) -> ComponentProcess:
        if self.process is None:
            raise RuntimeError("the component is not running")
        return self.process

    def _refuse_if_paused(self, what: str) -> None:
        if self._paused:
            raise RuntimeError(f"the component is paused (SIGSTOP): it cannot {what} until it resumes")

    async def _check_alive(self) -> None:
        """A component no step stopped or crashed has ended: say so, with its log, rather than
        let the barriers read it as one that does not serve."""
        process = self._running()
        if not await process.running():
            self.process = None
            raise RuntimeError(f"the component ended on its own:\n{process.log_tail()}")

    async def _user(self, user: str) -> dict[str, Any]:
        self._refuse_if_paused("tell what it sees")
        if self.process is None:
            return {"connected": False, "push": False, "sessions": []}
        await self._check_alive()
        return await self._get("/sessions.json", user=user)

    async def _get(self, path: str, **params: str) -> dict[str, Any]:
        """The JSON at ``path`` of a component that was serving: it must answer."""
        state = await self._fetch(path, **params)
        if state is None:
            log_tail = self.process.log_tail() if self.process is not None else ""
            raise RuntimeError(f"the component's admin API went away:\n{log_tail}")
        return state

    async def _fetch(self, path: str, **params: str) -> dict[str, Any] | None:
        """The JSON at ``path``, or None while nothing listens (it is starting)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        url = f"http://{self.config.admin_bind}:{self.config.admin_port}{path}"
        try:
            async with self._http.get(url, params=params,
                                      headers={"Authorization": f"Bearer {self.config.admin_token}"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"the component's admin API answered {resp.status} to {path}: "
                                       f"{(await resp.text()).strip()}")
                return await resp.json()
        except aiohttp.ClientConnectionError:
            return None
        except TimeoutError:
            raise RuntimeError(f"the component's admin API did not answer {path} within "
                               f"{REQUEST_TIMEOUT}s") from None


def control_for(server: ServerHandle, *, own_process: bool = False) -> ControlledComponent:
    """The component for ``server``: in the component image's container for the docker backends,
    as an ``mdm-component`` process when ``own_process``, else in this event loop."""
    workdir = server.workdir / "component"  # its pid file and log apart from the server's
    kind = kind_of(server.kind)
    if kind.docker:
        from .servers.docker import DockerComponent

        def container(toml: str, metrics_port: int) -> ComponentProcess:
            # the component image of the server's Debian release (R9.12: Python 3.13 on Debian 13)
            return DockerComponent(workdir, "mdm-component", toml=toml, metrics_port=metrics_port,
                                   release=kind.release)
        return RemoteComponentControl(server, container)
    if own_process:
        def process(toml: str, metrics_port: int) -> ComponentProcess:
            return ComponentProcess(workdir, "mdm-component", toml=toml, metrics_port=metrics_port)
        return RemoteComponentControl(server, process)
    return ComponentControl(server)

