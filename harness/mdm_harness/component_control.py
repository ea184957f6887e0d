"""The MDM component as scenarios drive it: its settings for the server under test, what a
scenario does to it (stop, start, crash, pause, a live reload) and what its barriers read of it
(ControlledComponent). ComponentControl runs it in the harness's own event loop: the same
Component class that ``mdm-component`` runs; component_remote.py runs ``mdm-component`` as a
process or in the component image's container."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

from mdm.component import Component
from mdm.config import LIVE_KEYS, Config, ConfigError, from_dict

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


def settings_toml(settings: dict[str, dict[str, object]]) -> str:
    """``settings`` as the component's TOML file (strings, numbers, booleans, lists of strings)."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)  # a JSON string or number is a TOML one
    return "".join(f"[{section}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in values.items()) + "\n"
                   for section, values in settings.items())


def component_config(server: ServerHandle) -> Config:
    return from_dict(component_settings(server))


@dataclass(frozen=True)
class SessionView:
    """What a scenario's barriers read of one session, as the component sees it."""
    jid: str
    inactive: bool  # R3.5: in the background (CSI)
    phantom: bool  # R5.7: hibernated (XEP-0198)


def assignment(settings: dict[str, dict[str, object]], text: str) -> tuple[dict[str, dict[str, object]], Config]:
    """``mdm.enabled = false`` / ``buffer.per_client_limit = 3`` applied to a copy of ``settings``,
    and the config it makes; only the keys a reload applies live (R1.2), validated like the
    config file."""
    key, _, raw = (p.strip() for p in text.partition("="))
    if key not in LIVE_KEYS:
        raise ConfigError(f"{key} is not applied live (R1.2: {', '.join(sorted(LIVE_KEYS))} are)")
    section, _, name = key.partition(".")
    value: object
    if raw in ("true", "false"):
        value = raw == "true"
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{key} must be true, false or a number, got {raw!r}") from None
    changed = {k: dict(v) for k, v in settings.items()}
    changed.setdefault(section, {})[name] = value
    return changed, from_dict(changed)  # raises ConfigError naming the key


class ControlledComponent(ABC):
    """What scenarios do to the component and read of it (runner.py, clients.py): the in-process
    one below, or one in a process or container of its own (component_remote.py), the same
    steps and barriers for both."""

    def __init__(self, server: ServerHandle) -> None:
        self.server = server
        self.settings = component_settings(server)
        self.config = from_dict(self.settings)

    def update_settings(self, extra: dict[str, dict[str, object]]) -> None:
        """Change config sections before start(), e.g. ``{"capacity": {"sized_users": 4}}``;
        validated like the config file."""
        settings = {k: dict(v) for k, v in self.settings.items()}
        for section, values in extra.items():
            settings.setdefault(section, {}).update(values)
        self.config = from_dict(settings)  # raises ConfigError naming the key
        self.settings = settings

    def _expected_nodes(self) -> set[str]:
        """R9.8: on a cluster, every node's bridge reports its own sessions before we serve."""
        return set(getattr(self.server, "node_names", ()))

    @abstractmethod
    async def start(self, timeout: float = 15.0) -> None:
        """Start and wait until the bridges have reported their sessions (the <sync/> barrier)."""

    @abstractmethod
    async def stop(self) -> None:
        """It closes its link and ends; what it holds stays in its store (R5.4)."""

    @abstractmethod
    async def crash(self) -> None:
        """The component dies without answering what it read (the bridges fail open, R9.6)."""

    @abstractmethod
    async def pause(self) -> None:
        """It stops answering, its link still open (the bridges' ack timeout, R2.4)."""

    @abstractmethod
    async def resume(self) -> None:
        """It answers again, from where it stopped."""

    @abstractmethod
    async def set(self, text: str) -> None:
        """A live reload (R1.2) of one key; done when the component runs with it."""

    @abstractmethod
    async def serving(self) -> bool:
        """Running and connected (a paused component still is)."""

    @abstractmethod
    async def session(self, jid: str) -> SessionView | None:
        """The component's view of a session; None when it does not know it or does not serve."""

    @abstractmethod
    async def push_registered(self, user: str) -> bool:
        """Whether the component knows ``user`` has a push registration (R7.1, R3.6)."""

    async def sees_inactive(self, jid: str) -> bool:
        """Whether the component knows ``jid`` is in the background (a barrier for CSI nonzas).
        A component that does not serve cannot tell: the bridge delivers natively then."""
        if not await self.serving():
            return True
        s = await self.session(jid)
        return s is not None and s.inactive


class ComponentControl(ControlledComponent):
    """The component in the harness's own event loop."""

    def __init__(self, server: ServerHandle) -> None:
        super().__init__(server)
        self.component: Component | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 15.0) -> None:
        if self.component is not None:
            raise RuntimeError("component already running")
        self.component = Component(self.config)
        self._task = asyncio.create_task(self.component.run())
        try:
            await asyncio.wait_for(self.component.synced.wait(), timeout)
            nodes = self._expected_nodes()
            component = self.component
            await poll_until(lambda: nodes <= component.core.synced.get(self.server.domain, set()), timeout,
                             f"not every cluster node reported its sessions within {timeout}s", interval=0.01)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(f"the component did not connect and sync within {timeout}s; "
                               f"server log:\n{self.server.log_tail()}") from None

    async def crash(self) -> None:
        """The task ends as a dying process would: the link aborted, nothing more answered."""
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

    async def pause(self) -> None:
        self.require().pause()

    async def resume(self) -> None:
        self.require().resume()

    async def set(self, text: str) -> None:
        if self.component is not None and self.component.paused:
            raise RuntimeError("the component is paused: it cannot reload until it resumes")
        self.settings, self.config = assignment(self.settings, text)
        if self.component is not None:
            self.component.reconfigure(self.config.core)

    async def serving(self) -> bool:
        return self.component is not None and self.component.stats.connected

    async def session(self, jid: str) -> SessionView | None:
        if not await self.serving():
            return None
        s = self.require().core.sessions.get(jid)
        return SessionView(s.jid, s.inactive, s.phantom) if s is not None else None

    async def push_registered(self, user: str) -> bool:
        return await self.serving() and user in self.require().core.sessions.push_users

    def counters(self) -> dict[str, float]:
        return self.require().counters()
