"""A pool of real aioxmpp clients: one user, many devices, each recording what it receives.

>>> pool = ClientPool(server)
>>> laptop = await pool.connect("alice.laptop", "alice@localhost", "pw", resource="laptop")
>>> await laptop.send("<presence/>")
>>> stanza = await laptop.next_stanza()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lxml import etree

from . import aioxmpp_adapter as adapter
from .iq import IqRoundTrips
from .streamclient import Endpoint, Login, StreamClient
from .waiting import poll_until

if TYPE_CHECKING:
    from .servers import ServerHandle

log = logging.getLogger(__name__)

SM = "urn:xmpp:sm:3"
CSI = "urn:xmpp:csi:0"
DEFAULT_TIMEOUT = 5.0


class Client(IqRoundTrips):
    """One connected device. ``received`` holds stanzas not yet consumed by an expectation."""

    def __init__(self, name: str, jid: str, password: str, resource: str | None = None) -> None:
        self.name = name
        self.jid = f"{jid}/{resource}" if resource else jid
        self.bare_jid = jid.split("/", 1)[0]
        self.password = password
        self.full_jid = ""
        self.received: list[etree._Element] = []
        self.history: list[etree._Element] = []  # everything, for transcripts
        self._arrived = asyncio.Condition()
        self._client = None
        self._cm = None
        self._waiting_ids: dict[str, asyncio.Future[etree._Element]] = {}
        self.inactive = False  # the last CSI nonza it sent was <inactive/> (XEP-0352)

    # --- connection ---

    async def connect(self, host: str, port: int) -> None:
        self.inactive = False  # a new session starts in the foreground
        self._client = adapter.make_client(self.jid, self.password, host, port)
        self._cm = self._client.connected()
        await asyncio.wait_for(self._cm.__aenter__(), 15)
        adapter.install_capture(self._client, self._on_element)
        self.full_jid = str(self._client.local_jid)

    async def disconnect(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            try:
                await asyncio.wait_for(cm.__aexit__(None, None, None), 10)
            except (TimeoutError, ConnectionError) as e:
                log.debug("%s: disconnect: %s", self.name, e)

    def abandon(self) -> None:
        """The server died under this client (a fault test): stop it at once, with no goodbye
        and no reconnect (aioxmpp would otherwise retry on its own)."""
        if self._client is not None:
            self._client.stop()
        self._cm = None

    @property
    def connected(self) -> bool:
        return self._cm is not None

    @property
    def stream_established(self) -> bool:
        """False once the server has ended this client's stream (e.g. after removing the account)."""
        return self._client is not None and self._cm is not None and bool(self._client.established)

    # --- receiving ---

    def _on_element(self, el: etree._Element) -> None:
        if etree.QName(el).namespace == SM:
            return  # stream management acks are transport, not conversation
        fut = self._waiting_ids.pop(el.get("id", ""), None) if el.tag.endswith("}iq") else None
        if fut is not None:
            if not fut.done():
                fut.set_result(el)
            return
        self.received.append(el)
        self.history.append(el)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Wait until at least ``count`` stanzas are unconsumed; False on timeout."""
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.received) >= count), timeout)
            except TimeoutError:
                return False
        return True

    async def next_stanza(self, timeout: float = DEFAULT_TIMEOUT) -> etree._Element | None:
        if not await self.wait_for(1, timeout):
            return None
        return self.received.pop(0)

    # --- sending ---

    async def send(self, xml: str | bytes | etree._Element) -> None:
        if self._client is None or self._cm is None:
            raise RuntimeError(f"{self.name} is not connected")
        if isinstance(xml, etree._Element):
            data = etree.tostring(xml)
        else:
            data = xml.encode() if isinstance(xml, str) else xml
        if CSI.encode() in data:
            if b"<inactive" in data:
                self.inactive = True
            elif b"<active" in data:
                self.inactive = False
        adapter.send_raw(self._client, data)

    async def drain(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until everything the server already wrote to this connection has been parsed."""
        await poll_until(lambda: self._client is None or self._cm is None or not adapter.unread_bytes(self._client),
                         timeout, f"{self.name}: unread data did not drain", interval=0)
        await asyncio.sleep(0)


class ClientPool:
    """Named clients against one server; ``barrier()`` waits until everything in flight arrived.

    ``component_sees_inactive(full_jid)`` (async; set by whoever runs the component) lets the
    barrier wait for a CSI nonza to reach the component: nonzas have no reply to wait for."""

    def __init__(self, server: ServerHandle,
                 component_sees_inactive: Callable[[str], Awaitable[bool]] | None = None,
                 own_streams: bool = False) -> None:
        self.server = server
        self.clients: dict[str, Client | StreamClient] = {}
        # issue 11: every client owns its stream (streamclient.py) when the server offers XEP-0198,
        # which aioxmpp would otherwise enable on its own
        self.own_streams = own_streams
        self._places: dict[str, int] = {}  # client name -> node index on a cluster
        self.component_sees_inactive = component_sees_inactive

    async def connect(self, name: str, jid: str, password: str, resource: str | None = None,
                      place: int | None = None, transport: str | None = None,
                      login: Login | None = None) -> Client | StreamClient:
        """A client that connects sees everything sent before it: hence a barrier first (ejabberd
        stores an offline message in the sender's session process, which may still be at it when
        the recipient logs in; the message would then wait for the next login).

        ``place``: on a cluster, which node (0-based, round-robin past the last); by default the
        order in which the pool first saw the client, so a user's devices land on different nodes
        (R9.8). A client keeps its node when it reconnects.

        ``transport`` (R9.5): ``tcp``, ``direct-tls`` or ``websocket``; any of them, a pool with
        ``own_streams``, or a SASL2 + Bind2 ``login`` (R9.11) makes it a StreamClient."""
        if any(c.connected for c in self.clients.values()):
            await self.barrier()
        if name not in self._places:
            self._places[name] = place if place is not None else len(self._places)
        client = self.clients.get(name)
        modern = login is not None and login.kind != "classic"
        if transport is not None or self.own_streams or modern or isinstance(client, StreamClient):
            if client is None:
                client = StreamClient(name, jid, password, resource, login)
            self.clients[name] = client
            assert isinstance(client, StreamClient)
            await client.connect(self.endpoint(transport or "tcp", self._places[name]))
            return client
        client = client or Client(name, jid, password, resource)
        self.clients[name] = client
        await client.connect(self.server.host, self.server.c2s_port_for(self._places[name]))
        return client

    def endpoint(self, transport: str, place: int = 0) -> Endpoint:
        """Where a StreamClient connects over ``transport`` (R9.5)."""
        s = self.server
        if transport == "tcp":
            return Endpoint("tcp", s.host, s.c2s_port_for(place), domain=s.domain)
        if transport == "direct-tls" and s.direct_tls_port:
            return Endpoint("direct-tls", s.host, s.direct_tls_port, domain=s.domain)
        if transport == "websocket" and s.websocket_url:
            return Endpoint("websocket", url=s.websocket_url, domain=s.domain)
        raise ValueError(f"{s.kind} was not started with a {transport} listener (server features: {transport})")

    async def disconnect(self, name: str) -> None:
        """Log the client out, and return once the server has ended its session."""
        client = self.clients[name]
        full_jid = client.full_jid
        await client.disconnect()
        await self.server.wait_session_closed(full_jid)

    def __getitem__(self, name: str) -> Client:
        return self.clients[name]

    async def barrier(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Deterministic quiescence, no sleeping on a guess. Each client's stream is in order, so
        an iq to the component answered means every stanza that client sent before was handled
        by the component (which answers in order) and its deliveries were handed to the server;
        then a ping from each client means every stanza queued for it before has been read.
        A client in the background must not get iqs (an iq flushes its buffer, R5.3a): for it we
        wait until the component has seen its <inactive/>, and until its socket is drained (on
        loopback the server's writes are in our socket before the other clients' replies)."""
        live = [c for c in self.clients.values() if c.connected]
        foreground = [c for c in live if not c.inactive]
        background = [c for c in live if c.inactive]
        await asyncio.gather(*(c.iq(f"<iq type='get' id='{{id}}' to='{self.server.component_jid}'>"
                                    "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
                               for c in foreground))
        if background and self.component_sees_inactive is not None:
            sees = self.component_sees_inactive

            async def all_seen() -> bool:
                return all([await sees(c.full_jid) for c in background])
            await poll_until(all_seen, timeout,
                             "the component did not see a client's <inactive/>", interval=0.005)
        await asyncio.gather(*(c.iq(f"<iq type='get' id='{{id}}' to='{self.server.domain}'>"
                                    "<ping xmlns='urn:xmpp:ping'/></iq>") for c in foreground))
        await asyncio.gather(*(c.drain() for c in background))

    async def close(self) -> None:
        await asyncio.gather(*(c.disconnect() for c in self.clients.values()), return_exceptions=True)
