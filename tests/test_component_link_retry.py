"""The component's link to the server (R9.9, issue 10 item 3): several server addresses tried in
turn, backoff on repeated failures whatever stage they reach (a handshake that succeeds and then
an immediate close counts), one log line per state change, never an empty reason."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from mdm.component import Component
from mdm.config import from_dict
from mdm_harness.ports import free_ports


class FakeServer:
    """A XEP-0114 server on loopback: ``mode`` "close-after-handshake" accepts the handshake and
    hangs up; "close-at-once" hangs up before a word; "serve" accepts and reports its sessions as a
    bridge does (a sync); "one-message-then-close" sends one message (no sync) and hangs up."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.accepts: list[float] = []
        self.accepted = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts.append(time.monotonic())
        self.accepted.set()
        try:
            if self.mode == "close-at-once":
                return
            await reader.readuntil(b">")  # <?xml …?>
            await reader.readuntil(b">")  # <stream:stream …>
            writer.write(b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                         b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='mdm.localhost'>")
            await reader.readuntil(b"</handshake>")
            writer.write(b"<handshake/>")
            if self.mode == "serve":  # as a bridge does: it reports its sessions (none)
                writer.write(b"<message from='localhost' to='mdm.localhost'>"
                             b"<events xmlns='urn:x-open-mdm:bridge:0'><sync/></events></message>")
                await writer.drain()
                await reader.read()  # until the component goes
            elif self.mode == "one-message-then-close":
                writer.write(b"<message from='x@localhost' to='mdm.localhost'><body>hi</body></message>")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def accepts_reach(self, n: int, timeout: float = 20.0) -> None:
        async def wait() -> None:
            while len(self.accepts) < n:
                self.accepted.clear()
                await self.accepted.wait()
        await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def component_for(tmp_path, *servers: int) -> Component:
    cfg = from_dict({"component": {"jid": "mdm.localhost", "secret": "s",
                                   "servers": [f"127.0.0.1:{p}" for p in servers]},
                     "buffer": {"store": str(tmp_path / "b.sqlite")}, "metrics": {"port": 0}})
    return Component(cfg)


async def run_until(component: Component, condition) -> None:
    task = asyncio.create_task(component.run())
    try:
        await condition()
    finally:
        await component.stop()
        await asyncio.wait_for(task, 10)


@pytest.mark.asyncio
@pytest.mark.parametrize(("mode", "reason"), [
    # the handshake succeeds, then the server hangs up at once
    ("close-after-handshake", "closed the component stream before sending anything"),
    # a stanza (not a bridge's sync), then the server hangs up: still no link that served
    ("one-message-then-close", "before any bridge reported its sessions"),
])
async def test_issue10_3_backoff_after_a_handshake_then_close_one_log_line_per_state(tmp_path, caplog, mode,
                                                                                    reason):
    """A failure series whatever stage the attempts reach: paced (0.2 s doubling) and logged once,
    not a reconnect every 0.2 s with a warning each."""
    caplog.set_level(logging.INFO, logger="mdm")
    server = FakeServer(mode)
    await server.start()
    try:
        await run_until(component_for(tmp_path, server.port), lambda: server.accepts_reach(5))
    finally:
        await server.close()
    gaps = [b - a for a, b in zip(server.accepts, server.accepts[1:], strict=False)]
    # 0.2, 0.4, 0.8, 1.6 s at least: sleeps never end early (no upper bound: a noisy machine)
    assert all(g >= 0.2 * 2 ** i * 0.95 for i, g in enumerate(gaps[:4])), gaps
    failures = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelname == "WARNING"
    assert reason in failures[0].getMessage()
    assert sum("connected to" in r.getMessage() for r in caplog.records) == 1
    assert not [r for r in caplog.records if "reconnecting" in r.getMessage()]


@pytest.mark.asyncio
async def test_issue10_3_eof_before_the_handshake_has_a_reason(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mdm")
    server = FakeServer("close-at-once")
    await server.start()
    try:
        await run_until(component_for(tmp_path, server.port), lambda: server.accepts_reach(3))
    finally:
        await server.close()
    failures = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(failures) == 1
    assert "the server closed the connection before the handshake completed" in failures[0]


@pytest.mark.asyncio
async def test_R9_9_next_server_address_when_one_is_down(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mdm")
    down = free_ports(1)[0]  # nothing listens there
    server = FakeServer("serve")
    await server.start()
    component = component_for(tmp_path, down, server.port)
    try:
        await run_until(component, lambda: asyncio.wait_for(component.connected.wait(), 20))
    finally:
        await server.close()
    assert len(server.accepts) == 1
    text = caplog.text
    assert f"cannot connect to 127.0.0.1:{down}" in text and f"connected to 127.0.0.1:{server.port}" in text
