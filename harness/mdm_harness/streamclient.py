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

Modern logins (R9.11, issue 21): with ``Login("bind2", …)`` the client logs in the way today's
phones do (Conversations, Monal): SASL2 (XEP-0388) with a Bind2 request (XEP-0386) inside the
``<authenticate/>``, carrying what the phone chooses inline: carbons (XEP-0280), its CSI state
(XEP-0352), stream management (XEP-0198); resumption goes inline in SASL2 too where the server
offers it, and a FAST token (XEP-0484, HT-SHA-256-NONE) replaces the password on later logins. No
stream restart after SASL2 ``<success/>``; the full JID is its ``<authorization-identifier/>``.
Where the server offers SASL2 only on an encrypted stream (ejabberd 24.12), the client upgrades
with STARTTLS first (the certificate is not verified) and names itself in the stream header.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import itertools
import logging
import ssl
import struct
import termios
import uuid
from dataclasses import dataclass, field

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
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL2 = "urn:xmpp:sasl:2"  # XEP-0388
BIND2 = "urn:xmpp:bind:0"  # XEP-0386
FAST = "urn:xmpp:fast:0"  # XEP-0484
FAST_MECHANISM = "HT-SHA-256-NONE"
CARBONS = "urn:xmpp:carbons:2"
TRANSPORTS = ("tcp", "direct-tls", "websocket")
LOGINS = ("classic", "bind2")
# R9.11: what a Bind2 login may carry inline (docs/scenarios.md, "Modern logins")
INLINE = ("carbons", "active", "inactive", "sm", "fast")
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


@dataclass(frozen=True)
class Login:
    """How a client logs in (R9.11). ``classic``: SASL PLAIN, a stream restart, the RFC 6120 bind
    iq; carbons and CSI come after, as an iq and nonzas. ``bind2``: SASL2 + Bind2 with ``inline``
    choices (INLINE): ``carbons`` (XEP-0280 enable), ``active`` / ``inactive`` (the XEP-0352 state
    the session starts in), ``sm`` (XEP-0198 enable with resumption; resumption then goes inline
    in SASL2 where the server offers it), ``fast`` (ask for a XEP-0484 token; later logins use it)."""
    kind: str = "classic"
    inline: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.kind not in LOGINS:
            raise ValueError(f"login must be one of {', '.join(LOGINS)}, not {self.kind!r}")
        unknown = set(self.inline) - set(INLINE)
        if unknown:
            raise ValueError(f"inline: unknown choice(s) {', '.join(sorted(unknown))} (known: {', '.join(INLINE)})")
        if self.inline and self.kind != "bind2":
            raise ValueError("inline choices need login: bind2")
        if {"active", "inactive"} <= self.inline:
            raise ValueError("inline: active or inactive, not both")

    @classmethod
    def parse(cls, kind: str | None, inline: str | None = None) -> Login:
        """From a scenario's ``login:`` and ``inline:`` lines; Bind2 enables carbons inline unless
        ``inline:`` says otherwise (``inline: none`` for nothing)."""
        kind = kind or "classic"
        if inline is None:
            choices = {"carbons"} if kind == "bind2" else set()
        else:
            choices = {c.strip() for c in inline.replace(";", ",").split(",") if c.strip() and c.strip() != "none"}
        return cls(kind, frozenset(choices))


class _Link:
    """One connection: writes raw XML, yields top-level elements (stanzas and nonzas)."""

    def __init__(self, on_element, on_closed) -> None:
        self._on_element = on_element
        self._on_closed = on_closed

    async def open(self) -> None: ...
    def write(self, data: str) -> None: ...
    def restart(self, domain: str, sender: str = "") -> None: ...
    async def start_tls(self, domain: str) -> None:
        raise StreamError("STARTTLS is for a plain TCP connection")
    def close_stream(self) -> None: ...
    def abort(self) -> None: ...
    def unread(self) -> int: return 0
    reads = 0  # socket reads so far: radio wake-ups for a phone (bench/wakeups.py)


def _unverified_tls() -> ssl.SSLContext:
    """The test servers' throw-away certificates are not verified: the transport is under test."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


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
            ctx = _unverified_tls()
            ctx.set_alpn_protocols(["xmpp-client"])  # XEP-0368
        reader, self._writer = await asyncio.open_connection(
            self.endpoint.host, self.endpoint.port, ssl=ctx,
            server_hostname=self.endpoint.domain if ctx else None)
        self._task = asyncio.create_task(self._read(reader))

    def restart(self, domain: str, sender: str = "") -> None:
        self._parser = None  # a new stream: a new parser from the next byte on
        frm = f" from='{sender}'" if sender else ""
        self.write(f"<?xml version='1.0'?><stream:stream xmlns='{CLIENT_NS}' xmlns:stream='{STREAMS}' "
                   f"to='{domain}'{frm} version='1.0'>")

    async def start_tls(self, domain: str) -> None:
        """RFC 6120 STARTTLS after the server's <proceed/>: the reader goes on, decrypted."""
        if self.endpoint.transport != "tcp" or self._writer is None:
            raise StreamError("STARTTLS is for a plain TCP connection")
        await self._writer.start_tls(_unverified_tls(), server_hostname=domain)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        depth = 0
        try:
            while data := await reader.read(65536):
                self.reads += 1
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

    def restart(self, domain: str, sender: str = "") -> None:
        frm = f" from='{sender}'" if sender else ""
        self.write(f"<open xmlns='{FRAMING}' to='{domain}'{frm} version='1.0'/>")

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

    def __init__(self, name: str, jid: str, password: str, resource: str | None = None,
                 login: Login | None = None) -> None:
        self.name = name
        self.login = login or Login()
        self.client_id = str(uuid.uuid4())  # XEP-0388 <user-agent id/>: stable for this device
        self.fast_token: str | None = None  # XEP-0484: once the server gave one
        self.resumed_inline = False  # the last resume() went inline in SASL2 (R9.11)
        self._bind2_offered: set[str] = set()  # what the server's Bind2 takes inline
        self.used_fast = False  # the last SASL2 login authenticated with a FAST token (XEP-0484)
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
        if self.login.kind == "bind2":  # R9.11: SASL2 + Bind2, the choices inline
            self._took(await self._sasl2(await self._open_stream(), bind=True))
            await self._after_bind2()
            return
        await self._login()
        self.send_nowait(f"<iq xmlns='{CLIENT_NS}' type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                         f"<resource>{self.resource}</resource></bind></iq>")
        reply = await self._nonza_or_iq("bind")
        jid = reply.findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
        if reply.get("type") != "result" or not jid:
            raise StreamError(f"{self.name}: bind failed: {etree.tostring(reply).decode()}")
        self.full_jid = jid

    async def _open_stream(self) -> etree._Element:
        """A new connection and stream; its features. A Bind2 login names itself in the header (a
        server offers SASL2 and FAST only then: ejabberd 24.12, mod_sasl2_fast) and upgrades with
        STARTTLS when SASL2 is offered only on an encrypted stream."""
        assert self.endpoint is not None
        self._nonzas = asyncio.Queue()
        make = _WebSocketLink if self.endpoint.transport == "websocket" else _SocketLink
        self._link = make(self.endpoint, self._on_element, self._on_closed)
        await self._link.open()
        self._open = True
        sender = self.bare_jid if self.login.kind == "bind2" else ""
        self._link.restart(self.domain, sender)
        features = await self._nonza("features")
        if (sender and features.find(f"{{{SASL2}}}authentication") is None
                and features.find(f"{{{TLS}}}starttls") is not None):
            self.send_nowait(f"<starttls xmlns='{TLS}'/>")
            await self._nonza("proceed")
            await self._link.start_tls(self.domain)
            self._link.restart(self.domain, sender)
            features = await self._nonza("features")
        return features

    async def _sasl2(self, features: etree._Element, *, bind: bool, resume: bool = False) -> etree._Element:
        """XEP-0388 <authenticate/> with what the phone chose inline (R9.11): a Bind2 request
        (XEP-0386) with carbons, the CSI state and stream management; a XEP-0198 <resume/>; FAST
        (XEP-0484) with the token from an earlier login. Returns the <success/>."""
        auth = features.find(f"{{{SASL2}}}authentication")
        if auth is None:
            raise StreamError(f"{self.name}: the server offers no SASL2 (XEP-0388) here: "
                              f"{etree.tostring(features).decode()}")
        inline = auth.find(f"{{{SASL2}}}inline")
        offered_fast = [m.text for m in inline.iterfind(f"{{{FAST}}}fast/{{{FAST}}}mechanism")] \
            if inline is not None else []
        choices = self.login.inline
        parts = []
        if self.fast_token and FAST_MECHANISM in offered_fast:
            proof = hmac.new(self.fast_token.encode(), b"Initiator", hashlib.sha256).digest()
            mechanism, response = FAST_MECHANISM, self.user.encode() + b"\0" + proof
        else:
            mechanism, response = "PLAIN", f"\0{self.user}\0{self.password}".encode()
        parts.append(f"<initial-response>{base64.b64encode(response).decode()}</initial-response>"
                     f"<user-agent id='{self.client_id}'><software>mdm-harness</software>"
                     f"<device>{self.name}</device></user-agent>")
        self.used_fast = mechanism == FAST_MECHANISM
        if self.used_fast:
            parts.append(f"<fast xmlns='{FAST}'/>")
        if "fast" in choices:
            parts.append(f"<request-token xmlns='{FAST}' mechanism='{FAST_MECHANISM}'/>")
        if resume:
            parts.append(f"<resume xmlns='{SM}' previd='{self.sm_id}' h='{self.handled}'/>")
        if bind:
            # what the server's Bind2 takes inline (mod_sasl2_bind2, ejabberd's c2s_inline_features);
            # XEP-0198 that it does not take is enabled with the nonza after (see connect())
            offered = self._bind2_offered = {f.get("var") for f in auth.iterfind(
                f"{{{SASL2}}}inline/{{{BIND2}}}bind/{{{BIND2}}}inline/{{{BIND2}}}feature")}
            csi = CSI in offered
            wanted = "".join(
                (f"<enable xmlns='{CARBONS}'/>" if "carbons" in choices else "")
                + "".join(f"<{state} xmlns='{CSI}'/>" for state in ("active", "inactive") if state in choices and csi)
                + (f"<enable xmlns='{SM}' resume='true'/>" if "sm" in choices and SM in offered else ""))
            parts.append(f"<bind xmlns='{BIND2}'><tag>{self.resource}</tag>{wanted}</bind>")
        self.send_nowait(f"<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>{''.join(parts)}</authenticate>")
        success = await self._nonza("success")
        token = success.find(f"{{{FAST}}}token")
        if token is not None and token.get("token"):
            self.fast_token = token.get("token")
        return success

    def offers_inline_resumption(self, features: etree._Element) -> bool:
        return features.find(f"{{{SASL2}}}authentication/{{{SASL2}}}inline/{{{SM}}}sm") is not None

    def _took(self, success: etree._Element) -> None:
        """What a SASL2 <success/> says of the session: bound by Bind2 (the full JID, stream
        management enabled inline, the CSI state chosen inline)."""
        bound = success.find(f"{{{BIND2}}}bound")
        if bound is None:
            raise StreamError(f"{self.name}: Bind2 did not bind: {etree.tostring(success).decode()}")
        jid = success.findtext(f"{{{SASL2}}}authorization-identifier") or ""
        if "/" not in jid:
            raise StreamError(f"{self.name}: no full JID after Bind2: {etree.tostring(success).decode()}")
        self.full_jid = jid
        enabled = bound.find(f"{{{SM}}}enabled")
        if enabled is not None and enabled.get("id"):
            self.sm_id, self.handled = enabled.get("id"), 0
        self.inactive = "inactive" in self.login.inline

    async def _after_bind2(self) -> None:
        """What the phone chose but the server's Bind2 did not take inline, done with the nonzas
        right after, as phones do: XEP-0198 (Prosody 0.12: mod_sasl2_sm needs Prosody 13), the CSI
        state (ejabberd 24.12 takes only carbons and XEP-0198 inline)."""
        if "sm" in self.login.inline and self.sm_id is None:
            await self.enable_sm()
        if CSI not in self._bind2_offered:
            for state in ("active", "inactive"):
                if state in self.login.inline:
                    self.send_nowait(f"<{state} xmlns='{CSI}'/>")

    async def _login(self) -> None:
        await self._open_stream()
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self.send_nowait(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        await self._nonza("success")
        self._link.restart(self.domain)
        await self._nonza("features")

    @property
    def connected(self) -> bool:
        return self._open

    @property
    def socket_reads(self) -> int:
        """Reads on the current connection (each one a radio wake-up for a phone)."""
        return self._link.reads if self._link is not None else 0

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

    async def resume(self, fresh_on_failure: bool = False) -> bool:
        """XEP-0198 resumption with the last ``h`` counted; True if the session was resumed. A
        Bind2 phone resumes inline in SASL2 where the server offers it (R9.11), with a Bind2
        request beside, so a failed resumption binds a fresh session in the same round trip; else
        after SASL2 with a <resume/> nonza, as a classic client does. When resumption fails: an
        error, or with ``fresh_on_failure`` a fresh session (as the phone then does) and False."""
        if self.sm_id is None:
            raise StreamError(f"{self.name}: cannot resume without stream management")
        self.resumed_inline = False
        if self.login.kind == "bind2":
            features = await self._open_stream()
            if self.offers_inline_resumption(features):
                self.resumed_inline = True
                success = await self._sasl2(features, bind=True, resume=True)
                if success.find(f"{{{SM}}}resumed") is not None:
                    self.full_jid = success.findtext(f"{{{SASL2}}}authorization-identifier") or self.full_jid
                    return True
                if not fresh_on_failure:
                    raise StreamError(f"{self.name}: inline resumption failed: {etree.tostring(success).decode()}")
                self.sm_id, self.handled = None, 0
                self._took(success)
                await self._after_bind2()
                return False
            await self._sasl2(features, bind=False)
        else:
            await self._login()
        self.send_nowait(f"<resume xmlns='{SM}' previd='{self.sm_id}' h='{self.handled}'/>")
        answer = await self._nonza("resumed", "failed")
        if etree.QName(answer).localname == "resumed":
            return True
        if not fresh_on_failure:
            raise StreamError(f"{self.name}: resumption failed: {etree.tostring(answer).decode()}")
        if self._link is not None:
            self._link.abort()
        self._open = False
        assert self.endpoint is not None
        await self.connect(self.endpoint)  # the session is gone: log in afresh, as the phone does
        return False

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
