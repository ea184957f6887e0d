"""A client that owns its stream: what a phone does, and the other ways in (issue 11).

aioxmpp cannot be told to keep XEP-0198 stream management off, to drop its connection without
closing the stream, or to resume with a chosen ``h``, and it speaks only TCP. This client speaks
just enough XMPP itself (SASL PLAIN, bind) over three transports, and keeps the same interface as
clients.Client (``received``, ``next_stanza``, ``send``, ``iq``, ``drain`` …), so scenarios and the
barrier treat both alike:

* ``tcp``: the plain c2s port (what the other harness clients use);
* ``direct-tls``: XEP-0368 direct TLS on its own port (R9.5; the certificate is not verified);
* ``websocket``: RFC 7395 XMPP over WebSocket (R9.5), one element per frame.

Mobile patterns (R5.7, R3.6): ``enable_sm()`` (with resumption), ``lose_connection()`` (the
network goes away: the socket is aborted, no ``</stream:stream>``, so the server hibernates the
session), ``resume()`` (a new connection, ``<resume previd h/>`` with the last ``h`` it counted),
``enable_push(service, node)`` (XEP-0357). It answers the server's ``<r/>`` with ``<a h/>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import itertools
import logging
import ssl
import struct
import termios
from dataclasses import dataclass

import aiohttp
from lxml import etree

from .iq import IqRoundTrips
from .waiting import poll_until

log = logging.getLogger(__name__)

CLIENT_NS = "jabber:client"
SM = "urn:xmpp:sm:3"
CSI = "urn:xmpp:csi:0"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
STREAMS = "http://etherx.jabber.org/streams"
TRANSPORTS = ("tcp", "direct-tls", "websocket")
_ids = itertools.count(1)
_STANZAS = {f"{{{CLIENT_NS}}}{n}" for n in ("message", "presence", "iq")}


class StreamError(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoint:
    """Where a transport connects: host and port (tcp, direct-tls) or a ws:// URL."""
    transport: str
    host: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    domain: str = "localhost"


class _Link:
    """One connection: writes raw XML, yields top-level elements (stanzas and nonzas)."""

    def __init__(self, on_element, on_closed) -> None:
        self._on_element = on_element
        self._on_closed = on_closed

    async def open(self) -> None: ...
    def write(self, data: str) -> None: ...
    def restart(self, domain: str) -> None: ...
    def close_stream(self) -> None: ...
    def abort(self) -> None: ...
    def unread(self) -> int: return 0


class _SocketLink(_Link):
    def __init__(self, endpoint: Endpoint, on_element, on_closed) -> None:
        super().__init__(on_element, on_closed)
        self.endpoint = endpoint
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._parser: etree.XMLPullParser | None = None

    async def open(self) -> None:
        ctx = None
        if self.endpoint.transport == "direct-tls":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["xmpp-client"])  # XEP-0368
        reader, self._writer = await asyncio.open_connection(
            self.endpoint.host, self.endpoint.port, ssl=ctx,
            server_hostname=self.endpoint.domain if ctx else None)
        self._task = asyncio.create_task(self._read(reader))

    def restart(self, domain: str) -> None:
        self._parser = None  # a new stream: a new parser from the next byte on
        self.write(f"<?xml version='1.0'?><stream:stream xmlns='{CLIENT_NS}' xmlns:stream='{STREAMS}' "
                   f"to='{domain}' version='1.0'>")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        depth = 0
        try:
            while data := await reader.read(65536):
                if self._parser is None:
                    # huge_tree: a server may deliver what it accepted from a client, deeper than
                    # libxml2's default 256 levels (R9.6's hostile inputs)
                    self._parser, depth = etree.XMLPullParser(events=("start", "end"), huge_tree=True), 0
                self._parser.feed(data)
                for event, el in self._parser.read_events():
                    depth += 1 if event == "start" else -1
                    if event == "end" and depth == 1:
                        self._on_element(el)
                        el.getparent().remove(el)
        except (ConnectionError, OSError) as e:
            log.debug("connection ended: %s", e)
        finally:
            self._on_closed()

    def write(self, data: str) -> None:
        if self._writer is None or self._writer.is_closing():
            raise StreamError("not connected")
        self._writer.write(data.encode())

    def close_stream(self) -> None:
        with contextlib.suppress(StreamError):
            self.write("</stream:stream>")

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        if self._task is not None:
            self._task.cancel()

    def unread(self) -> int:
        sock = self._writer.get_extra_info("socket") if self._writer else None
        if sock is None:
            return 0
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


class _WebSocketLink(_Link):
    def __init__(self, endpoint: Endpoint, on_element, on_closed) -> None:
        super().__init__(on_element, on_closed)
        self.endpoint = endpoint
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.endpoint.url, protocols=("xmpp",))
        self._task = asyncio.create_task(self._read())

    def restart(self, domain: str) -> None:
        self.write(f"<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>")

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                self._on_element(etree.fromstring(msg.data.encode()))
        finally:
            self._on_closed()
            if self._http is not None:
                await self._http.close()

    def write(self, data: str) -> None:
        if self._ws is None or self._ws.closed:
            raise StreamError("not connected")
        asyncio.get_running_loop().create_task(self._ws.send_str(data))

    def close_stream(self) -> None:
        with contextlib.suppress(StreamError):
            self.write(f"<close xmlns='{FRAMING}'/>")

    def abort(self) -> None:
        if self._ws is not None:
            conn = self._ws._response.connection  # noqa: SLF001 (no public way to drop the socket)
            if conn is not None and conn.transport is not None:
                conn.transport.abort()


class StreamClient(IqRoundTrips):
    """One device with its own stream. ``received`` holds stanzas not yet consumed."""

    _iq_prefix = "s"
    _error = StreamError

    def __init__(self, name: str, jid: str, password: str, resource: str | None = None) -> None:
        self.name = name
        self.bare_jid = jid.split("/", 1)[0]
        self.jid = f"{jid}/{resource}" if resource else jid
        self.user, _, self.domain = self.bare_jid.partition("@")
        self.resource = resource or f"h{next(_ids)}"
        self.password = password
        self.full_jid = ""
        self.received: list[etree._Element] = []
        self.history: list[etree._Element] = []
        self.inactive = False
        self.endpoint: Endpoint | None = None
        self.sm_id: str | None = None  # XEP-0198 resumption id, once enabled
        self.handled = 0  # stanzas received since <enabled/>: the h of <a/> and <resume/>
        self._link: _Link | None = None
        self._nonzas: asyncio.Queue[etree._Element] = asyncio.Queue()
        self._arrived = asyncio.Condition()
        self._waiting_ids: dict[str, asyncio.Future[etree._Element]] = {}
        self._open = False  # the stream is up and not closed by either side

    # --- connection ---

    async def connect(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.inactive = False
        self.sm_id, self.handled = None, 0
        self.full_jid = ""  # a new session: bound below
        await self._login()
        self.send_nowait(f"<iq xmlns='{CLIENT_NS}' type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                         f"<resource>{self.resource}</resource></bind></iq>")
        reply = await self._nonza_or_iq("bind")
        jid = reply.findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
        if reply.get("type") != "result" or not jid:
            raise StreamError(f"{self.name}: bind failed: {etree.tostring(reply).decode()}")
        self.full_jid = jid

    async def _login(self) -> None:
        assert self.endpoint is not None
        self._nonzas = asyncio.Queue()
        make = _WebSocketLink if self.endpoint.transport == "websocket" else _SocketLink
        self._link = make(self.endpoint, self._on_element, self._on_closed)
        await self._link.open()
        self._open = True
        self._link.restart(self.domain)
        await self._nonza("features")
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self.send_nowait(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        await self._nonza("success")
        self._link.restart(self.domain)
        await self._nonza("features")

    @property
    def connected(self) -> bool:
        return self._open

    @property
    def stream_established(self) -> bool:
        return self._open

    async def disconnect(self) -> None:
        """Close the stream (a logout), and wait until the server closed its side."""
        if self._link is None or not self._open:
            return
        self._link.close_stream()
        with contextlib.suppress(TimeoutError):
            await poll_until(lambda: not self._open, 10, f"{self.name}: the server did not close the stream")
        self._link.abort()
        self._open = False

    # --- XEP-0198, XEP-0357: the phone's verbs ---

    async def enable_sm(self) -> str:
        self.send_nowait(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await self._nonza("enabled")
        if not enabled.get("id"):
            raise StreamError(f"{self.name}: the server did not offer resumption")
        self.sm_id, self.handled = enabled.get("id"), 0
        return self.sm_id

    async def lose_connection(self) -> None:
        """The network goes away: no stream close; the server hibernates the session. Before, the
        phone acks what it read and waits for the server's own <a/> (a round trip), as a phone
        that was idle would have: so what the server holds unacked is what really was in flight."""
        if self.sm_id is not None and self._open:
            self.send_nowait(f"<a xmlns='{SM}' h='{self.handled}'/><r xmlns='{SM}'/>")
            await self._nonza("a")
        if self._link is not None:
            self._link.abort()
        self._open = False

    async def resume(self) -> None:
        if self.sm_id is None:
            raise StreamError(f"{self.name}: cannot resume without stream management")
        await self._login()
        self.send_nowait(f"<resume xmlns='{SM}' previd='{self.sm_id}' h='{self.handled}'/>")
        answer = await self._nonza("resumed", "failed")
        if etree.QName(answer).localname == "failed":
            raise StreamError(f"{self.name}: resumption failed: {etree.tostring(answer).decode()}")

    async def enable_push(self, service: str, node: str) -> None:
        reply = await self.iq(f"<iq type='set' id='{{id}}'><enable xmlns='urn:xmpp:push:0' jid='{service}' "
                              f"node='{node}'/></iq>")
        if reply.get("type") != "result":
            raise StreamError(f"{self.name}: push enable failed: {etree.tostring(reply).decode()}")

    # --- receiving ---

    def _on_closed(self) -> None:
        self._open = False

    def _on_element(self, el: etree._Element) -> None:
        name = etree.QName(el)
        if name.namespace == SM:
            if name.localname == "r":
                with contextlib.suppress(StreamError):
                    self.send_nowait(f"<a xmlns='{SM}' h='{self.handled}'/>")
                return
            if name.localname == "a":
                self._nonzas.put_nowait(el)  # lose_connection() waits for one
                return
        if el.tag not in _STANZAS:
            self._nonzas.put_nowait(el)
            return
        if self.sm_id is not None:
            self.handled += 1
        if el.get("id") == "bind" and el.tag.endswith("}iq") and not self.full_jid:
            self._nonzas.put_nowait(el)
            return
        fut = self._waiting_ids.pop(el.get("id", ""), None) if el.tag.endswith("}iq") else None
        if fut is not None:
            if not fut.done():
                fut.set_result(el)
            return
        self.received.append(el)
        self.history.append(el)
        asyncio.get_running_loop().create_task(self._notify())

    async def _nonza(self, *localnames: str, timeout: float = 10) -> etree._Element:
        while True:
            try:
                el = await asyncio.wait_for(self._nonzas.get(), timeout)
            except TimeoutError:
                raise StreamError(f"{self.name}: no <{'/'.join(localnames)}/> within {timeout}s") from None
            name = etree.QName(el).localname
            if name in localnames:
                return el
            if name in ("failure", "error", "failed"):
                raise StreamError(f"{self.name}: {etree.tostring(el).decode()}")

    async def _nonza_or_iq(self, iq_id: str) -> etree._Element:
        while True:
            el = await self._nonza("iq")
            if el.get("id") == iq_id:
                return el

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> bool:
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.received) >= count), timeout)
            except TimeoutError:
                return False
        return True

    async def next_stanza(self, timeout: float = 5.0) -> etree._Element | None:
        if not await self.wait_for(1, timeout):
            return None
        return self.received.pop(0)

    # --- sending ---

    def send_nowait(self, xml: str) -> None:
        if self._link is None:
            raise StreamError(f"{self.name} is not connected")
        self._link.write(xml)

    async def send(self, xml: str | bytes | etree._Element) -> None:
        if isinstance(xml, etree._Element):
            xml = etree.tostring(xml)
        text = xml.decode() if isinstance(xml, bytes) else xml
        if CSI in text:
            if "<inactive" in text:
                self.inactive = True
            elif "<active" in text:
                self.inactive = False
        if self.endpoint is not None and self.endpoint.transport == "websocket":
            # RFC 7395: one complete element per frame, each with its own namespace
            for el in etree.fromstring(f"<w xmlns='{CLIENT_NS}'>{text}</w>"):
                self.send_nowait(etree.tostring(el).decode())
            return
        self.send_nowait(text)

    async def drain(self, timeout: float = 5.0) -> None:
        """Until everything the server already wrote to this connection has been parsed."""
        link = self._link
        await poll_until(lambda: link is None or not self._open or link.unread() == 0, timeout,
                         f"{self.name}: unread data did not drain", interval=0)
        await asyncio.sleep(0)
