"""A lean XEP-0114 link: one TCP connection, the accept-handshake, lxml incremental parsing.

This is the only module that touches the component's socket. The MDM component needs nothing of
a general XMPP library (no roster, no disco framework): it exchanges one kind of stanza with its
bridges, and lxml's pull parser gives us each stanza parsed once, as the element the codec reads.

Limits (R9.6, mdm.limits): stanzas of up to ``max_stanza_size`` bytes and any depth are read
(``huge_tree``: libxml2 would otherwise end the link at 256 levels); one nested deeper than
``MAX_DEPTH`` is dropped with a (rate-limited) warning, the link stays up. What we send is split
into stanzas the server accepts. Malformed XML from the server, an undeclared entity included, ends
the link at once with a clear error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from lxml import etree

from . import namespaces as ns
from .limits import MAX_DEPTH, SERVER_MAX_STANZA, RateLimitedLog, split_commands

log = logging.getLogger(__name__)
_dropped = RateLimitedLog(log)

_STREAM_ERROR = ns.q(ns.STREAMS, "error")
_HANDSHAKE = ns.q(ns.COMPONENT, "handshake")


class LinkError(Exception):
    """The link failed; ``fatal`` means retrying with the same settings cannot help."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: hex SHA-1 of the stream id followed by the shared secret."""
    return hashlib.sha1((stream_id + secret).encode("utf-8")).hexdigest()


def _too_big(command: etree._Element, size: int) -> None:
    _dropped.log("too-big", "not sent: a <%s ref=%r/> command of %d bytes, over what the server takes "
                 "from the component; the bridge delivers that message natively",
                 etree.QName(command).localname, command.get("ref"), size)


def _stream_error_text(el: etree._Element) -> str:
    conditions = [etree.QName(c).localname for c in el if etree.QName(c).namespace == ns.STREAM_ERRORS
                  and etree.QName(c).localname != "text"]
    text = el.findtext(ns.q(ns.STREAM_ERRORS, "text"))
    return " ".join(conditions) + (f" ({text})" if text else "")


class ComponentLink:
    def __init__(self, jid: str, secret: str, *, max_stanza_size: int = 1 << 20,
                 max_depth: int = MAX_DEPTH, max_send_size: int = SERVER_MAX_STANZA) -> None:
        self.jid = jid
        self._secret = secret
        self._max = max_stanza_size
        self._max_depth = max_depth
        self._max_send = max_send_size
        self._too_deep = 0  # the depth the stanza being read reached, once over the limit
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser: etree.XMLPullParser | None = None
        self._root: etree._Element | None = None
        self._depth = 0
        self._pending: deque[etree._Element] = deque()
        self._since_last = 0
        self._error: LinkError | None = None
        self._ended = False

    async def connect(self, host: str, port: int, timeout: float = 10.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        # resolve_entities: an entity the stream never declared is then an error at once, not a
        # parser that silently stops producing stanzas (XMPP has no DTD; one is refused below).
        # huge_tree: no depth limit in libxml2; ours is applied per stanza.
        self._parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=True,
                                           no_network=True, huge_tree=True, remove_comments=True,
                                           remove_pis=True, load_dtd=False)
        self._depth = 0
        self._too_deep = 0
        self._error, self._ended = None, False
        self._write(f"<?xml version='1.0'?><stream:stream xmlns='{ns.COMPONENT}' "
                    f"xmlns:stream='{ns.STREAMS}' to='{self.jid}'>".encode())
        stream_id = await asyncio.wait_for(self._stream_header(), timeout)
        self._write(f"<handshake>{handshake_digest(stream_id, self._secret)}</handshake>".encode())
        reply = await asyncio.wait_for(self._next(), timeout)
        if reply is None:
            raise LinkError("the server closed the stream during the handshake")
        if reply.tag == _STREAM_ERROR:
            reason = _stream_error_text(reply)
            fatal = "not-authorized" in reason or "host-unknown" in reason
            hint = " (check component.secret and component.jid against the server's component entry)" \
                if fatal else ""
            raise LinkError(f"handshake refused by the server: {reason}{hint}", fatal=fatal)
        if reply.tag != _HANDSHAKE:
            raise LinkError(f"unexpected reply to the handshake: {reply.tag}")

    async def _stream_header(self) -> str:
        while self._root is None or self._depth == 0:
            if self._error is not None:
                raise self._error
            await self._read_more()
        if self._root.getroottree().docinfo.doctype:
            raise LinkError("the server's stream has a DTD (XMPP forbids it; RFC 6120 §11.1)")
        stream_id = self._root.get("id")
        if not stream_id:
            raise LinkError("the server's stream header has no id")
        return stream_id

    async def _read_more(self) -> None:
        assert self._reader is not None and self._parser is not None
        data = await self._reader.read(65536)
        if not data:
            raise EOFError
        self._since_last += len(data)
        error: LinkError | None = None
        try:
            self._parser.feed(data)
        except etree.XMLSyntaxError as e:
            error = LinkError(f"the server sent malformed XML: {e}")
        # Stanzas complete before a syntax error are still good: hand them out first.
        for event, el in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = el
                elif self._depth - 1 > self._max_depth:
                    self._too_deep = max(self._too_deep, self._depth - 1)
            else:
                self._depth -= 1
                if self._depth == 1:
                    self._root.remove(el)  # keep memory flat: the stream never grows
                    self._since_last = 0
                    if self._too_deep:
                        _dropped.log("too-deep", "dropped a <%s/> from the server nested %d levels deep "
                                     "(limit %d); the link stays up. A bridge never sends this "
                                     "(mdm_max_depth); anything else addressed to the component is "
                                     "not for MDM", etree.QName(el).localname, self._too_deep,
                                     self._max_depth)
                        self._too_deep = 0
                    else:
                        self._pending.append(el)
                elif self._depth == 0:
                    self._ended = True
        if error is None and self._since_last > self._max:
            # Counted per read, so the bound is max_stanza_size plus at most one 64 KiB read.
            error = LinkError(f"a stanza from the server exceeds {self._max} bytes")
        if error is not None:
            self._error = error

    async def _next(self) -> etree._Element | None:
        while not self._pending:
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            try:
                await self._read_more()
            except EOFError:
                return None
        return self._pending.popleft()

    async def stanzas(self) -> AsyncIterator[etree._Element]:
        """Yield top-level stanzas until the stream ends; a stream error raises LinkError."""
        while True:
            el = await self._next()
            if el is None:
                return
            if el.tag == _STREAM_ERROR:
                raise LinkError(f"stream error from the server: {_stream_error_text(el)}")
            yield el

    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    def send(self, stanzas: list[etree._Element]) -> None:
        """Send, splitting a command stanza the server would not take (over ``max_send_size``)."""
        if self._writer is None or self._writer.is_closing():
            raise LinkError("not connected")
        parts: list[bytes] = []
        for s in stanzas:
            data = etree.tostring(s)
            if len(data) <= self._max_send:
                parts.append(data)
            else:
                parts.extend(split_commands(s, self._max_send, _too_big))
        self._write(b"".join(parts))

    async def drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    def abort(self) -> None:
        """Close the TCP connection without a stream close (a crash, as the server sees it)."""
        if self._writer is not None:
            self._writer.transport.abort()

    async def close(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            if not writer.is_closing():
                writer.write(b"</stream:stream>")
                await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
