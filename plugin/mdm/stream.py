"""A lean XEP-0114 link: one TCP connection, the accept-handshake, lxml incremental parsing.

This is the only module that touches the component's socket. The MDM component needs nothing of
a general XMPP library (no roster, no disco framework): it exchanges one kind of stanza with its
bridges, and lxml's pull parser gives us each stanza parsed once, as the element the codec reads.

Limits (R9.6, mdm.limits): stanzas of up to ``max_stanza_size`` bytes are read; one nested deeper
than ``MAX_DEPTH`` is dropped with a (rate-limited) warning, the link stays up. What we send is
split into stanzas the server accepts. Malformed XML from the server, an undeclared entity
included, ends the link at once with a clear error.

Depth, whatever the lxml (R9.12): libxml2 ends a whole document nested deeper than 256 levels, or
2048 with ``huge_tree`` from 2.11 on (lxml 5+), and the stream is one document, so the parser must
never get there. ``DepthGuard`` feeds it only what cannot reach our limit: a piece of the input
holding k ``<`` can deepen the tree by at most k, so pieces within the headroom go to lxml as they
are (one ``bytes.count`` each: the hot path); only at the limit itself are tags looked at one by
one, and an element that would open deeper is cut out, with everything up to its parent's end
tag, before lxml sees it. The stanza then arrives well-formed but cut, and is dropped as too deep.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable

from lxml import etree

from . import namespaces as ns
from .limits import MAX_DEPTH, MAX_PARSER_DEPTH, SERVER_MAX_STANZA, RateLimitedLog, split_commands

log = logging.getLogger(__name__)
_dropped = RateLimitedLog(log)

_STREAM_ERROR = ns.q(ns.STREAMS, "error")
_HANDSHAKE = ns.q(ns.COMPONENT, "handshake")


class LinkError(Exception):
    """The link failed; ``fatal`` means retrying with the same settings cannot help."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


# One markup token, from its "<": an end tag, a comment, CDATA, a processing instruction or
# declaration, or a start tag (empty when it ends in "/>"; quoted attribute values may hold ">").
_TOKEN = re.compile(rb"""<(?:(?P<end>/)[^>]*>|!--.*?-->|!\[CDATA\[.*?\]\]>|\?.*?\?>|![^>]*>
                    |(?P<start>[^/!?>\s](?:[^>"']|"[^"]*"|'[^']*')*)>)""", re.S | re.X)
# The same tokens cut short by the end of what has arrived: wait for the rest.
_UNFINISHED = re.compile(rb"""<(?:!-(?:-(?:[^-]|-(?!->))*-?)?
                         |!\[(?:C(?:D(?:A(?:T(?:A(?:\[(?:[^\]]|\](?!\]>))*\]?)?)?)?)?)?)?
                         |\?(?:[^?]|\?(?!>))*\??|![^>\[-][^>]*|/[^>]*|!
                         |(?:[^>"']|"[^"]*"|'[^']*')*(?:"[^"]*|'[^']*)?)\Z""", re.S | re.X)


class DepthGuard:
    """Hands ``feed`` only input that keeps the parser's depth (the stream root is level 1) at
    most ``limit``; what would open deeper is cut out (see the module's docstring).

    ``depth()`` reads the depth the parser has reached (its start/end events so far). It is exact
    after each ``feed``, because a piece given to the parser always ends between two tokens (an
    unfinished last token is held back until the rest arrives). Pieces of plain markup go by
    counting; comments, CDATA and processing instructions (which may hold a "<"; servers send
    none) and the tags at the limit itself go token by token."""

    def __init__(self, limit: int, feed: Callable[[bytes], None], depth: Callable[[], int]) -> None:
        self.limit = limit
        self._feed = feed
        self._depth = depth
        self._held = b""
        self._skipping = False
        self._skip_depth = 0  # elements opened inside the part being cut out
        self.cut_depth = 0  # the deepest level a cut part reached, once something was cut

    def feed(self, data: bytes) -> None:
        buf, self._held = self._held + data, b""
        pos, n = 0, len(buf)
        plain = buf.find(b"<!") < 0 and buf.find(b"<?") < 0
        if plain:
            last = buf.rfind(b"<")
            if last >= 0 and _UNFINISHED.match(buf, last):
                n, self._held = last, buf[last:]
        while pos < n:
            if self._skipping:
                pos = self._skip(buf, pos, n)
            elif plain and (end := self._piece(buf, pos, n)) > pos:
                self._feed(buf[pos:end])
                pos = end
            else:
                pos = self._token(buf, pos, n)

    def _piece(self, buf: bytes, pos: int, n: int) -> int:
        """The end of the longest piece from ``pos`` (halving, cut just before a "<") whose "<"
        count fits the headroom; ``pos`` if not even one tag fits."""
        headroom = self.limit - self._depth()
        end, k = n, buf.count(b"<", pos, n)
        while k > headroom:
            cut = buf.find(b"<", pos + (end - pos) // 2, end)
            if cut <= pos:
                cut = buf.find(b"<", pos + 1, end)
            if cut <= pos:  # one "<", at pos: its tag would not fit
                return pos
            end, k = cut, buf.count(b"<", pos, cut)
        return end

    def _token(self, buf: bytes, pos: int, n: int) -> int:
        """Text up to the next "<" and the token there: fed, cut, or held back if unfinished."""
        lt = buf.find(b"<", pos, n)
        if lt < 0:
            self._feed(buf[pos:n])
            return n
        if lt > pos:
            self._feed(buf[pos:lt])
        m = _TOKEN.match(buf, lt, n)
        if m is None:
            if _UNFINISHED.match(buf, lt, n):
                self._held = buf[lt:n] + self._held
            else:
                self._feed(buf[lt:n])  # malformed: lxml says so, and the link ends
            return n
        if m.group("start") is not None and self._depth() + 1 > self.limit:
            # a start tag one level too deep: cut it and its siblings out
            self._skipping, self._skip_depth = True, 0
            self.cut_depth = max(self.cut_depth, self._depth() + 1)
            return lt
        self._feed(m.group())
        return m.end()

    def _skip(self, buf: bytes, pos: int, n: int) -> int:
        """Skip from ``pos`` to the end tag closing the cut part's parent (fed from there on)."""
        while True:
            lt = buf.find(b"<", pos, n)
            if lt < 0:
                return n
            m = _TOKEN.match(buf, lt, n)
            if m is None:
                if _UNFINISHED.match(buf, lt, n):
                    self._held = buf[lt:n] + self._held
                    return n
                self._skipping = False  # malformed inside the cut part: lxml says so
                return lt
            if m.group("end") is not None:
                if self._skip_depth == 0:
                    self._skipping = False
                    return lt
                self._skip_depth -= 1
            elif m.group("start") is not None and not m.group("start").endswith(b"/"):
                self._skip_depth += 1
                self.cut_depth = max(self.cut_depth, self._depth() + 1 + self._skip_depth)
            pos = m.end()

    def take_cut(self) -> int:
        """The depth a cut stanza reached (0 if none was cut), and forget it."""
        depth, self.cut_depth = self.cut_depth, 0
        return depth


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
        if not 0 < max_depth <= MAX_PARSER_DEPTH - 1:
            raise ValueError(f"max_depth must be 1..{MAX_PARSER_DEPTH - 1} (libxml2's own limit is 2048)")
        self._max_depth = max_depth
        self._max_send = max_send_size
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser: etree.XMLPullParser | None = None
        self._guard: DepthGuard | None = None
        self._root: etree._Element | None = None
        self._depth = 0
        self._pending: deque[etree._Element] = deque()
        self._since_last = 0
        self._error: LinkError | None = None
        self._ended = False

    async def connect(self, host: str, port: int, timeout: float = 10.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        self._new_parser()
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

    def _new_parser(self) -> None:
        """A parser for a new stream, behind its depth guard."""
        # resolve_entities: an entity the stream never declared is then an error at once, not a
        # parser that silently stops producing stanzas (XMPP has no DTD; one is refused below).
        # huge_tree: libxml2's limits on text and attribute sizes lifted (ours is max_stanza_size);
        # depth is kept within ours by the guard, below any libxml2's own (256, or 2048 huge).
        self._parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=True,
                                           no_network=True, huge_tree=True, remove_comments=True,
                                           remove_pis=True, load_dtd=False)
        self._depth = 0
        # +1: the stream root is a level too; stanzas may nest max_depth levels below it
        self._guard = DepthGuard(self._max_depth + 1, self._parse, lambda: self._depth)

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
            self._guard.feed(data)
        except etree.XMLSyntaxError as e:
            error = LinkError(f"the server sent malformed XML: {e}")
            self._events()  # stanzas complete before a syntax error are still good: hand them out
        if error is None and self._since_last > self._max:
            # Counted per read, so the bound is max_stanza_size plus at most one 64 KiB read.
            error = LinkError(f"a stanza from the server exceeds {self._max} bytes")
        if error is not None:
            self._error = error

    def _parse(self, data: bytes) -> None:
        """Feed lxml (only what the depth guard lets through) and take its events at once, so
        the guard always knows the depth reached."""
        assert self._parser is not None
        self._parser.feed(data)
        self._events()

    def _events(self) -> None:
        assert self._parser is not None and self._guard is not None
        for event, el in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = el
                continue
            self._depth -= 1
            if self._depth == 1:
                self._root.remove(el)  # keep memory flat: the stream never grows
                self._since_last = 0
                too_deep = self._guard.take_cut()
                if too_deep:
                    _dropped.log("too-deep", "dropped a <%s/> from the server nested more than %d levels deep "
                                 "(at least %d); the link stays up. A bridge never sends this "
                                 "(mdm_max_depth); anything else addressed to the component is "
                                 "not for MDM", etree.QName(el).localname, self._max_depth,
                                 too_deep - 1)
                else:
                    self._pending.append(el)
            elif self._depth == 0:
                self._ended = True

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
