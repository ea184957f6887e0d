"""A push app server double (XEP-0357 §7): an XEP-0114 component, ``push.<domain>``, that records
every notification the server's push module publishes to it, and answers each with a result.

Each publish becomes one element scenarios match (``Push service receives:``)::

    <push node='phone' alerting='true' count='1' sender='bob@localhost/desktop' body='hi'/>

``alerting`` is whether the summary carries a body (``last-message-body``): what makes a phone
show a notification. Prosody's mod_cloud_notify calls such a push "important"; ejabberd's mod_push
adds the body only for messages with one. A push without it only wakes the app (R3.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

from lxml import etree

from .waiting import poll_until

log = logging.getLogger(__name__)

COMPONENT = "jabber:component:accept"
STREAMS = "http://etherx.jabber.org/streams"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUSH = "urn:xmpp:push:0"
DATA = "jabber:x:data"
# The double's own component secret: ejabberd's ejabberd_service registers every host of a
# listener that shares a password with the one that authenticated, so it must differ from the MDM
# component's (or the MDM component's link would also take push.<domain>).
SECRET = "push-double-secret"


def summary(iq: etree._Element) -> etree._Element | None:
    """The recorded form of a XEP-0357 publish: ``<push node alerting count sender body/>``."""
    publish = iq.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish")
    if publish is None:
        return None
    out = etree.Element("{jabber:client}push", nsmap={None: "jabber:client"})
    out.set("node", publish.get("node", ""))
    fields = {}
    for f in publish.iterfind(f".//{{{PUSH}}}notification/{{{DATA}}}x/{{{DATA}}}field"):
        fields[f.get("var")] = f.findtext(f"{{{DATA}}}value") or ""
    out.set("alerting", "true" if fields.get("last-message-body") else "false")
    for var, attr in (("message-count", "count"), ("last-message-sender", "sender"),
                      ("last-message-body", "body")):
        if var in fields:
            out.set(attr, fields[var])
    return out


class PushService:
    """Connects as the component ``jid``; ``received`` holds pushes not yet consumed by a step,
    ``history`` every push in arrival order."""

    def __init__(self, jid: str, secret: str, host: str, port: int) -> None:
        self.jid, self.secret, self.host, self.port = jid, secret, host, port
        self.received: list[etree._Element] = []
        self.history: list[etree._Element] = []
        self._arrived = asyncio.Condition()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._pongs: dict[str, asyncio.Future[None]] = {}
        self._pings = 0

    async def start(self, timeout: float = 10.0) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(f"<stream:stream xmlns='{COMPONENT}' xmlns:stream='{STREAMS}' to='{self.jid}'>".encode())
        self._task = asyncio.create_task(self._read(reader))
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                self._writer.write(b"</stream:stream>")
            self._writer.transport.abort()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = etree.XMLPullParser(events=("start", "end"))
        depth = 0
        while data := await reader.read(65536):
            parser.feed(data)
            for event, el in parser.read_events():
                depth += 1 if event == "start" else -1
                if event == "start" and depth == 1:  # the stream header: answer the handshake
                    digest = hashlib.sha1((el.get("id", "") + self.secret).encode()).hexdigest()
                    self._writer.write(f"<handshake>{digest}</handshake>".encode())
                elif event == "end" and depth == 1:
                    self._stanza(el)
                    el.getparent().remove(el)

    def _stanza(self, el: etree._Element) -> None:
        name = etree.QName(el).localname
        if name == "handshake":
            self._ready.set()
            return
        if name == "iq" and el.get("type") in ("result", "error"):
            pong = self._pongs.pop(el.get("id", ""), None)
            if pong is not None and not pong.done():
                pong.set_result(None)
            return
        if name != "iq" or el.get("type") not in ("set", "get"):
            return
        push = summary(el) if el.get("type") == "set" else None
        kind = "result" if push is not None else "error"
        reply = f"<iq type='{kind}' id='{el.get('id', '')}' from='{self.jid}' to='{el.get('from', '')}'"
        reply += "/>" if kind == "result" else ("><error type='cancel'><feature-not-implemented "
                                                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
        self._writer.write(reply.encode())
        if push is not None:
            log.debug("push for node %s: %s", push.get("node"), dict(push.attrib))
            self.received.append(push)
            self.history.append(push)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def next_stanza(self, timeout: float = 5.0) -> etree._Element | None:
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: bool(self.received)), timeout)
            except TimeoutError:
                return None
        return self.received.pop(0)

    async def barrier(self, timeout: float = 10.0) -> None:
        """A ping to the server on this link and its answer: a push the server sent before it
        took the ping has arrived by then (one stream, in order)."""
        assert self._writer is not None
        self._pings += 1
        ping_id = f"push-barrier-{self._pings}"
        pong = self._pongs[ping_id] = asyncio.get_running_loop().create_future()
        domain = self.jid.split(".", 1)[1]
        self._writer.write(f"<iq type='get' id='{ping_id}' from='{self.jid}' to='{domain}'>"
                           "<ping xmlns='urn:xmpp:ping'/></iq>".encode())
        try:
            await asyncio.wait_for(pong, timeout)
        finally:
            self._pongs.pop(ping_id, None)

    def count(self, node: str | None = None, alerting: bool | None = None) -> int:
        """Pushes so far (for ``node``; alerting ones only, or non-alerting ones only)."""
        return sum(1 for p in self.history if (node is None or p.get("node") == node)
                   and (alerting is None or (p.get("alerting") == "true") == alerting))

    async def wait_count(self, n: int, timeout: float, **match: object) -> None:
        await poll_until(lambda: self.count(**match) >= n, timeout,  # type: ignore[arg-type]
                         f"the push service got {self.count(**match)} of {n} pushes")  # type: ignore[arg-type]
