"""The MDM component run in the harness's own event loop: the same Component class that
``mdm-component`` runs, configured for the server under test, and controllable by scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets

from mdm.component import Component
from mdm.config import Config, from_dict

from .ports import free_ports
from .servers import ServerHandle
from .waiting import poll_until


def component_settings(server: ServerHandle) -> dict[str, dict[str, object]]:
    return {
        "component": {"jid": server.component_jid, "secret": server.component_secret,
                      "server_host": server.host, "server_port": server.component_port,
                      "hosts": [server.domain], "admins": [f"alice@{server.domain}"]},
        "mdm": {},
        # the store lives with the server's data: it outlives component restarts in a scenario
        "buffer": {"store": str(server.workdir / "mdm-buffers.sqlite")},
        "metrics": {"port": free_ports(1)[0]},
        "report": {"directory": str(server.workdir / "mdm-sessions.sqlite"), "node": f"{server.kind}-1"},
        # the admin page on a free loopback port, with a token only this run knows
        "admin": {"port": free_ports(1)[0], "token": secrets.token_urlsafe(24)},
    }


def component_config(server: ServerHandle) -> Config:
    return from_dict(component_settings(server))


class ComponentControl:
    def __init__(self, server: ServerHandle) -> None:
        self.server = server
        self.settings = component_settings(server)
        self.config = from_dict(self.settings)
        self.component: Component | None = None
        self._task: asyncio.Task[None] | None = None

    def update_settings(self, extra: dict[str, dict[str, object]]) -> None:
        """Change config sections before start(), e.g. ``{"capacity": {"sized_users": 4}}``;
        validated like the config file."""
        settings = {k: dict(v) for k, v in self.settings.items()}
        for section, values in extra.items():
            settings.setdefault(section, {}).update(values)
        self.config = from_dict(settings)  # raises ConfigError naming the key
        self.settings = settings

    async def start(self, timeout: float = 15.0) -> None:
        """Start and wait until the bridge has reported its sessions (the <sync/> barrier)."""
        if self.component is not None:
            raise RuntimeError("component already running")
        self.component = Component(self.config)
        self._task = asyncio.create_task(self.component.run())
        try:
            await asyncio.wait_for(self.component.synced.wait(), timeout)
            # R9.8: on a cluster, every node's bridge reports its own sessions
            nodes = set(getattr(self.server, "node_names", ()))
            component = self.component
            await poll_until(lambda: nodes <= component.core.synced.get(self.server.domain, set()), timeout,
                             f"not every cluster node reported its sessions within {timeout}s", interval=0.01)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(f"the component did not connect and sync within {timeout}s; "
                               f"server log:\n{self.server.log_tail()}") from None

    async def crash(self) -> None:
        """The component dies without answering what it read; the task ends."""
        if self.component is None:
            return
        component, task = self.component, self._task
        self.component, self._task = None, None
        component.crash()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)

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
        """``mdm.enabled = false`` / ``buffer.per_client_limit = 3``: a live reload (R1.2) of
        the core's settings, validated like the config file."""
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
        settings = {k: dict(v) for k, v in self.settings.items()}
        settings.setdefault(section, {})[name] = value
        config = from_dict(settings)  # raises ConfigError naming the key
        self.settings = settings
        self.config = dataclasses.replace(self.config, core=config.core)
        if self.component is not None:
            self.component.reconfigure(config.core)

    def sees_inactive(self, jid: str) -> bool:
        """Whether the component knows ``jid`` is in the background (a barrier for CSI nonzas).
        A stopped component cannot tell: the bridge delivers natively then, nothing to wait for."""
        if self.component is None or not self.component.stats.connected:
            return True
        session = self.component.core.sessions.get(jid)
        return session is not None and session.inactive

    def counters(self) -> dict[str, float]:
        return self.require().counters()
