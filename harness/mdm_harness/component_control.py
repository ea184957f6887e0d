"""The MDM component run in the harness's own event loop: the same Component class that
``mdm-component`` runs, configured for the server under test, and controllable by scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from mdm.component import Component
from mdm.config import Config, from_dict

from .servers import ServerHandle


def component_config(server: ServerHandle, **mdm: object) -> Config:
    return from_dict({
        "component": {"jid": server.component_jid, "secret": server.component_secret,
                      "server_host": server.host, "server_port": server.component_port,
                      "hosts": [server.domain]},
        "mdm": dict(mdm),
    })


class ComponentControl:
    def __init__(self, server: ServerHandle) -> None:
        self.server = server
        self.config = component_config(server)
        self.component: Component | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 15.0) -> None:
        """Start and wait until the bridge has reported its sessions (the <sync/> barrier)."""
        if self.component is not None:
            raise RuntimeError("component already running")
        self.component = Component(self.config)
        self._task = asyncio.create_task(self.component.run())
        try:
            await asyncio.wait_for(self.component.synced.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(f"the component did not connect and sync within {timeout}s; "
                               f"server log:\n{self.server.log_tail()}") from None

    def require(self) -> Component:
        if self.component is None:
            raise RuntimeError("the component is not running")
        return self.component

    async def stop(self) -> None:
        if self.component is None:
            return
        component, task = self.component, self._task
        self.component, self._task = None, None
        await component.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)

    def set(self, assignment: str) -> None:
        """``mdm.enabled = false`` / ``mdm.active_window = 1``: a live reload (R1.2)."""
        key, _, raw = (p.strip() for p in assignment.partition("="))
        section, _, name = key.partition(".")
        value: object
        if raw in ("true", "false"):
            value = raw == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                value = float(raw)
        current = {"enabled": self.config.core.enabled, "active_window": self.config.core.active_window}
        current[name] = value
        merged = from_dict({"component": {"jid": self.config.jid, "secret": self.config.secret},
                            section: current})
        self.config = dataclasses.replace(self.config, core=merged.core)
        if self.component is not None:
            self.component.reconfigure(merged.core)
