"""The runnable component: the XEP-0114 link, the bridge codec and the core, wired together.

One asyncio task reads the link; each stanza is decoded, fed to the core and answered at once
with one command stanza per host. The core is synchronous, so when the reader is waiting on the
socket the component is idle: ``stats()`` is what tests ask instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from . import namespaces as ns
from .bridge_protocol import EVENTS, decode_events, encode_commands
from .config import Config
from .core import CoreConfig, MdmCore
from .events import Action, Resync, Route
from .stream import ComponentLink, LinkError

log = logging.getLogger(__name__)

_IQ = ns.q(ns.COMPONENT, "iq")
_MESSAGE = ns.q(ns.COMPONENT, "message")
_DISCO_INFO = "http://jabber.org/protocol/disco#info"


@dataclass
class Stats:
    connected: bool = False
    connects: int = 0
    stanzas_in: int = 0
    events: int = 0
    rejected: int = 0


class Component:
    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.core = MdmCore(config.core)
        self._clock = clock
        self._hosts = set(config.hosts)
        self._link: ComponentLink | None = None
        self._stopping = asyncio.Event()
        self.stats = Stats()
        self.connected = asyncio.Event()
        # Set once a bridge has reported its sessions after we connected (a <sync/>): from then
        # on every session event reaches us, which is what test set-ups wait for.
        self.synced = asyncio.Event()
        # Cleared by pause(): the reader holds stanzas unprocessed (maintenance, and the tests of
        # the bridge's fail-open timeout).
        self._running = asyncio.Event()
        self._running.set()

    def reconfigure(self, core: CoreConfig) -> None:
        """R1.2: apply a new [mdm] section live, keeping every session."""
        log.info("reconfigured: mdm.enabled=%s active_window=%ss", core.enabled, core.active_window)
        self.config.core = core
        self.core.reconfigure(core)

    async def run(self) -> None:
        """Connect, serve, reconnect with capped exponential backoff until stop()."""
        backoff = 0.2
        while not self._stopping.is_set():
            link = ComponentLink(self.config.jid, self.config.secret,
                                 max_stanza_size=self.config.max_stanza_size)
            try:
                await link.connect(self.config.server_host, self.config.server_port)
            except (TimeoutError, OSError, LinkError, EOFError) as e:
                level = logging.ERROR if isinstance(e, LinkError) and e.fatal else logging.WARNING
                log.log(level, "cannot connect to %s:%s as %s: %s; retrying in %.1fs",
                        self.config.server_host, self.config.server_port, self.config.jid,
                        e or type(e).__name__, backoff)
                await link.close()
                await self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.2
            self._link = link
            self.stats.connected = True
            self.stats.connects += 1
            self.connected.set()
            log.info("connected to %s:%s as %s", self.config.server_host, self.config.server_port,
                     self.config.jid)
            try:
                async for stanza in link.stanzas():
                    await self._running.wait()
                    self._on_stanza(stanza)
                    await link.drain()
                if not self._stopping.is_set():
                    log.warning("the server closed the component stream; reconnecting")
            except (LinkError, OSError) as e:
                if not self._stopping.is_set():
                    log.warning("component link lost: %s; reconnecting", e)
            finally:
                self.connected.clear()
                self.synced.clear()
                self.stats.connected = False
                self._link = None
                # The bridges deliver what we had not acknowledged natively (fail-open) and report
                # every session again when we are back, so our session table starts afresh.
                self.core = MdmCore(self.config.core)
                await link.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def pause(self) -> None:
        """Stop processing (stanzas wait, unanswered); the bridges fail open after their timeout."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._running.set()
        if self._link is not None:
            await self._link.close()

    # --- stanzas ---

    def _on_stanza(self, stanza: etree._Element) -> None:
        self.stats.stanzas_in += 1
        sender = stanza.get("from", "")
        if stanza.tag == _MESSAGE and stanza.find(EVENTS) is not None:
            if sender not in self._hosts:
                # Only the bridges of our own domains may drive us; anyone else gets an error.
                self.stats.rejected += 1
                log.warning("rejected bridge events from %r: not one of component.hosts %s",
                            sender, sorted(self._hosts))
                self._send([_error_reply(stanza, "forbidden")])
                return
            self._on_events(stanza, sender)
        elif stanza.tag == _IQ and stanza.get("type") in ("get", "set"):
            self._send([self._answer_iq(stanza)])
        # Other messages and presence addressed to the component are not for us: ignored.

    def _on_events(self, stanza: etree._Element, host: str) -> None:
        decoded = decode_events(stanza, host)
        for err in decoded.errors:
            log.warning("bridge %s: %s", host, err)
        now = self._clock()
        # A held message we could not read goes back to the server to deliver natively.
        actions: list[Action] = [Route(ref, h) for ref, h in decoded.unroutable]
        for event in decoded.events:
            self.stats.events += 1
            actions.extend(self.core.handle(event, now))
            if isinstance(event, Resync):
                self.synced.set()
        if actions:
            self._send(encode_commands(actions, self.config.jid))

    def _answer_iq(self, iq: etree._Element) -> etree._Element:
        query = iq[0] if len(iq) else None
        if iq.get("type") == "get" and query is not None and query.tag == ns.q(_DISCO_INFO, "query"):
            reply = _reply(iq, "result")
            q = etree.SubElement(reply, query.tag, nsmap={None: _DISCO_INFO})
            ident = etree.SubElement(q, ns.q(_DISCO_INFO, "identity"))
            ident.attrib.update({"category": "component", "type": "generic", "name": "Multi-Device Messaging"})
            return reply
        return _error_reply(iq, "service-unavailable")

    def _send(self, stanzas: list[etree._Element]) -> None:
        if self._link is None:
            return
        self._link.send(stanzas)


def _reply(stanza: etree._Element, type_: str) -> etree._Element:
    el = etree.Element(stanza.tag, nsmap={None: ns.COMPONENT})
    if stanza.get("id") is not None:
        el.set("id", stanza.get("id"))
    el.set("from", stanza.get("to", ""))
    el.set("to", stanza.get("from", ""))
    el.set("type", type_)
    return el


def _error_reply(stanza: etree._Element, condition: str) -> etree._Element:
    el = _reply(stanza, "error")
    err = etree.SubElement(el, ns.q(ns.COMPONENT, "error"))
    err.set("type", "cancel" if condition != "forbidden" else "auth")
    etree.SubElement(err, ns.q("urn:ietf:params:xml:ns:xmpp-stanzas", condition),
                     nsmap={None: "urn:ietf:params:xml:ns:xmpp-stanzas"})
    return el


