"""The runnable component: the XEP-0114 link, the bridge codec and the core, wired together.

One asyncio task reads the link; each stanza is decoded, fed to the core and answered at once
with one command stanza per host. The core is synchronous: once the reader waits on the socket,
everything read has been answered. ``synced`` tells when a bridge has reported its sessions.
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
from . import status as live_state
from .admin import AdminPage
from .bridge_protocol import EVENTS, decode_events, encode_commands
from .capacity import Alert, CapacityMonitor, count_sessions
from .config import Config, live_values
from .core import CoreConfig, MdmCore
from .directory import SessionDirectory, open_directory
from .events import Action, DropHeld, Resync, Route, StoreHeld
from .ha import ActiveLock
from .jid import bare
from .limits import RateLimitedLog, log_bridge_error
from .metrics import MetricsServer
from .report import Report, build, node_info, node_sessions
from .store import Store, StoreError, open_store
from .stream import ComponentLink, LinkError

log = logging.getLogger(__name__)
# R9.6: forged <events/> from any client: one line a minute, with a count
_rejected = RateLimitedLog(log)
# a database that went away: one line a minute, not a traceback per check (issue 10 item 5)
_housekeeping_failed = RateLimitedLog(log)

_IQ = ns.q(ns.COMPONENT, "iq")
_MESSAGE = ns.q(ns.COMPONENT, "message")
_DISCO_INFO = "http://jabber.org/protocol/disco#info"
_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
_COMMANDS = "http://jabber.org/protocol/commands"
_DATA = "jabber:x:data"
COUNTERS_NODE = "mdm-counters"


@dataclass
class Stats:
    connected: bool = False
    connects: int = 0
    stanzas_in: int = 0
    events: int = 0
    rejected: int = 0


class Component:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time,
                 store: Store | None = None) -> None:
        self.config = config
        self._clock = clock  # wall clock: held stanzas carry XEP-0203 stamps
        self.store: Store = store or open_store(config.store_path, config.jid)
        # Empty until we connect: held stanzas are loaded from the store at each (re)connect
        # (load_core), since a standby's store may have changed meanwhile (R5.4, R9.9).
        self.core = MdmCore(config.core)
        # R9.9: with [ha] lock, only the instance holding the lock connects (one active, standbys).
        self.lock: ActiveLock | None = ActiveLock(config.ha_lock, config.jid, heartbeat=config.ha_heartbeat) \
            if config.ha_lock else None
        self.active = False  # connected and serving (the lock held, if there is one)
        self._lock_unreachable = False
        # Store writes and the stanzas that must wait for them, in order ("persist before you
        # acknowledge"); empty on the hot path, so a batch without held stanzas pays no round trip.
        self._outbox: list[tuple[str, object]] = []
        self.metrics: MetricsServer | None = None
        self.capacity = CapacityMonitor(config.capacity)  # R7
        self.directory: SessionDirectory | None = None  # R8: where the nodes publish their sessions
        self.admin: AdminPage | None = None
        self._last_alert: Alert | None = None
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
        """R1.2: apply the live keys ([mdm], the buffer limits, the counter period), keeping every
        session."""
        self.config.core = core
        log.info("reconfigured: %s", " ".join(f"{k}={v}" for k, v in live_values(self.config).items()))
        actions = self.core.reconfigure(core, self._clock())
        if actions and self.stats.connected:  # R3.6: the bridges' push vetoes follow (R1.3)
            self._send(encode_commands(actions, self.config.jid))

    async def load_core(self) -> MdmCore:
        """A fresh core holding what the store kept (R5.4: buffers survive restarts; R9.9: the
        instance that takes over restores what the one it replaces held)."""
        core = MdmCore(self.config.core)
        for jid, held in (await self.store.load()).items():
            core.restore(jid, held)
        if core.held_total:
            log.info("restored %d held stanza(s) for %d session(s)", core.held_total, len(core.buffers))
        self.core = core
        return core

    def role_metrics(self) -> dict[str, float]:
        """R9.9: 1 while this instance is the active one (connected and serving), 0 on standby."""
        return {"mdm_component_active": 1.0 if self.active else 0.0}

    def counters(self) -> dict[str, float]:
        """R6 and R7 together, as /metrics exports them."""
        return {**self.mdm_counters(), **self.capacity.counters()}

    def mdm_counters(self) -> dict[str, float]:
        return self.core.counters(self._clock())

    # --- capacity (R7) and the session report (R8) --------------------------------------------

    async def check_capacity(self) -> Alert | None:
        """Count this node's sessions and announce an alert (log, gauge, webhook) if due."""
        cfg = self.config
        counts = count_sessions(self.core.sessions, set(cfg.capacity.hybrid_users))
        alert = self.capacity.update(self._clock(), counts)
        if alert is not None:
            self._last_alert = alert if alert.kind != "cleared" else None
            text = alert.message(cfg.node)
            log.log(logging.INFO if alert.kind == "cleared" else logging.WARNING, "%s", text)
            if cfg.capacity.webhook:
                asyncio.get_running_loop().create_task(self._post_alert(alert, text))
        return alert

    def alert_text(self) -> str | None:
        return self._last_alert.message(self.config.node) if self.capacity.alerting and self._last_alert else None

    async def _post_alert(self, alert: Alert, text: str) -> None:
        import aiohttp
        body = {"alert": "JSMSessionsExceedsThreshold", "state": alert.kind, "node": self.config.node,
                "sessions": alert.sessions, "capacity": alert.capacity, "threshold": alert.threshold,
                "message": text, "at": self._clock()}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                    http.post(self.config.capacity.webhook, json=body) as resp:
                if resp.status >= 300:
                    log.warning("capacity webhook %s answered %s", self.config.capacity.webhook, resp.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("capacity webhook %s failed: %s", self.config.capacity.webhook, e)

    async def publish_sessions(self) -> None:
        """Publish this node's sessions to the shared directory (R8: one report for the cluster)."""
        if self.directory is None:
            return
        cfg, now = self.config, self._clock()
        await self.directory.publish(node_info(cfg.node, cfg.redundancy_group, cfg.sub_cluster, cfg.capacity, now),
                                     node_sessions(self.core.sessions, cfg.node, cfg.capacity))

    def status(self) -> dict[str, object]:
        """The live state for the admin API (status.py)."""
        return live_state.status(self.config, self.core, active=self.active, connected=self.stats.connected)

    def user_sessions(self, user: str) -> dict[str, object]:
        return live_state.user_sessions(self.config, self.core, user, self._clock(), connected=self.stats.connected)

    async def report(self) -> Report:
        """The cluster's session report, with this node's sessions as of now."""
        await self.publish_sessions()
        assert self.directory is not None
        nodes, sessions = await self.directory.read()
        return build(nodes, sessions, self._clock(), self.config.cluster)

    async def _housekeeping(self) -> None:
        published = 0.0
        failing = False
        while not self._stopping.is_set():
            try:
                await self.check_capacity()
                # a standby has no sessions: it must not overwrite the active instance's entry
                standby = self.lock is not None and not self.active
                if not standby and time.monotonic() - published >= self.config.publish_interval:
                    published = time.monotonic()
                    await self.publish_sessions()
                if failing:
                    failing = False
                    _housekeeping_failed.reset("failed")  # a new failure is news again
                    log.info("capacity check and session publication work again")
            except Exception as e:  # a failing database must not stop the component (issue 10)
                failing = True
                _housekeeping_failed.log("failed", "capacity check or session publication failed: %s (%s); "
                                         "retrying every %.0fs, MDM delivery goes on", _describe(e),
                                         type(e).__name__, self.config.check_interval)
            await self._sleep(self.config.check_interval)

    async def run(self) -> None:
        """Connect, serve, reconnect with capped exponential backoff until stop()."""
        cfg = self.config
        if cfg.metrics_port and self.metrics is None:
            self.metrics = MetricsServer(lambda: {**self.counters(), **self.role_metrics()},
                                         cfg.metrics_bind, cfg.metrics_port)
            await self.metrics.start()
        self.directory = await open_directory(cfg.directory)
        if cfg.admin_port:
            self.admin = AdminPage(token=cfg.admin_token, node=cfg.node, report=self.report,
                                   counters=self.mdm_counters, capacity_counters=self.capacity.counters,
                                   alert=self.alert_text, status=self.status, user_sessions=self.user_sessions,
                                   host=cfg.admin_bind, port=cfg.admin_port)
            await self.admin.start()
        housekeeping = asyncio.get_running_loop().create_task(self._housekeeping())
        try:
            await self._run()
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            if self.admin is not None:
                await self.admin.stop()
                self.admin = None
            if self.metrics is not None:
                await self.metrics.stop()
                self.metrics = None
            await self.directory.close()
            if self.lock is not None:
                await self.lock.release()
            await self.store.close()

    async def _run(self) -> None:
        """R9.9 / issue 10: wait to be the active instance, connect to the next server address,
        serve; on a lost link or a failed attempt, try the next address. Consecutive failures
        back off (0.2 s doubling to 30 s) whatever stage they reached: a link that ends before a
        bridge reported its sessions on it (a sync) counts as a failure too, whatever else the
        server sent. Logged once per state change: the first failure of a series (and a new
        reason) at WARNING, repeats at DEBUG."""
        addresses = self.config.server_addresses()
        turn = 0
        failures = 0
        failure_reason = ""
        delay = 0.0

        def failed(host: str, port: int, reason: str, fatal: bool = False) -> None:
            nonlocal failures, failure_reason, delay
            failures += 1
            delay = min(0.2 * 2 ** (failures - 1), 30.0)
            if failures == 1 or reason != failure_reason:
                log.log(logging.ERROR if fatal else logging.WARNING,
                        "cannot connect to %s:%s as %s: %s; retrying with backoff (repeats logged at debug "
                        "level)", host, port, self.config.jid, reason)
            else:
                log.debug("cannot connect to %s:%s (attempt %d): %s; retrying in %.1fs",
                          host, port, failures, reason, delay)
            failure_reason = reason

        while not self._stopping.is_set():
            if delay:
                await self._sleep(delay)
                if self._stopping.is_set():
                    break
            if self.lock is not None and not self.lock.held and not await self._become_active():
                continue
            host, port = addresses[turn % len(addresses)]
            turn += 1
            link = ComponentLink(self.config.jid, self.config.secret,
                                 max_stanza_size=self.config.max_stanza_size)
            try:
                await link.connect(host, port)
                await self.load_core()  # after the handshake: what the store holds now
            except (TimeoutError, OSError, LinkError, EOFError, StoreError) as e:
                await link.close()
                failed(host, port, _describe(e), isinstance(e, LinkError) and e.fatal)
                continue
            self._link = link
            self.active = True
            self.stats.connected = True
            self.stats.connects += 1
            self.connected.set()
            announced = failures == 0  # in a series of failures, only a link that works is news
            log.log(logging.INFO if announced else logging.DEBUG, "connected to %s:%s as %s", host, port,
                    self.config.jid)
            since = time.monotonic()
            heard = False  # the server sent us something
            served = False  # a bridge reported its sessions (Resync): the link really worked
            ended = "the server closed the component stream"
            fence = None
            if self.lock is not None:
                fence = asyncio.get_running_loop().create_task(self._fence(link))
            try:
                async for stanza in link.stanzas():
                    await self._running.wait()
                    if self._stopping.is_set() or (self.lock is not None and self.lock.lost.is_set()):
                        break  # crash() or fenced: what is unread stays unanswered
                    heard = True
                    self._on_stanza(stanza)
                    if not served and self.synced.is_set():
                        served = True
                        if not announced:
                            log.info("connected to %s:%s as %s after %d failed attempt(s)", host, port,
                                     self.config.jid, failures)
                        failures, failure_reason = 0, ""
                    if self._outbox:
                        await self._commit()
                    await link.drain()
            except (LinkError, OSError, StoreError) as e:
                ended = f"component link lost: {_describe(e)}"
            finally:
                if fence is not None:
                    fence.cancel()
                self._outbox.clear()
                self.active = False
                self.connected.clear()
                self.synced.clear()
                self.stats.connected = False
                self._link = None
                # The bridges deliver what we had not acknowledged natively (fail-open) and report
                # every session again when we are back, so our session table starts afresh; held
                # stanzas come back from the store when we connect again.
                self.core = MdmCore(self.config.core)
                if self.lock is not None and self.lock.lost.is_set():
                    link.abort()  # fenced: not even a stream close
                else:
                    await link.close()
            if self._stopping.is_set() or (self.lock is not None and self.lock.lost.is_set()):
                delay = 0.0
                continue
            if served:
                log.warning("%s; reconnecting", ended)
                # a link that keeps ending at once is paced; one that served a while comes back at once
                delay = 0.0 if time.monotonic() - since >= 1.0 else 0.2
            else:  # handshake done, then closed before any bridge synced: a failure like any other
                why = "before sending anything" if not heard else "before any bridge reported its sessions"
                failed(host, port, f"{ended} {why}" if ended.startswith("the server") else ended)

    async def _become_active(self) -> bool:
        """Wait for the HA lock (R9.9). False if we are stopping or PostgreSQL is unreachable
        (then after a pause, so the caller just loops)."""
        assert self.lock is not None
        acquire = asyncio.ensure_future(self.lock.acquire())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acquire
            return False
        try:
            waited = acquire.result()
        except Exception as e:  # noqa: BLE001 - asyncpg raises many kinds; all mean "not now"
            if not self._lock_unreachable:
                log.warning("ha.lock: PostgreSQL unreachable (%s); retrying", _describe(e))
            self._lock_unreachable = True
            await self._sleep(1.0)
            return False
        self._lock_unreachable = False
        log.info("active: %s the HA lock; connecting", "took over" if waited else "took")
        return True

    async def _fence(self, link: ComponentLink) -> None:
        """R9.9 fencing: the lock is gone, so another instance may become active: drop the
        XMPP link at once, answering nothing more (the bridges fail open meanwhile)."""
        assert self.lock is not None
        await self.lock.lost.wait()
        link.abort()

    def _persist(self, actions) -> None:
        """Queue a store write (StoreHeld / DropHeld); stanzas sent after it wait for it."""
        batch = list(actions)
        if batch:
            self._outbox.append(("store", batch))

    async def _commit(self) -> None:
        """Carry out the queued store writes and sends, in order: held stanzas are persisted
        before the ack that follows them leaves, and forgotten only after the deliveries left
        (R5.4: a crash repeats, never loses). A store failure raises StoreError: the link is
        dropped before anything is acknowledged on its behalf."""
        outbox, self._outbox = self._outbox, []
        for kind, item in outbox:
            if kind == "store":
                await self.store.apply(item)  # type: ignore[arg-type]
            elif self._link is not None:
                self._link.send(item)  # type: ignore[arg-type]

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def pause(self) -> None:
        """Stop processing (stanzas wait, unanswered); the bridges fail open after their timeout."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    async def stop(self) -> None:
        self._stopping.set()
        self._running.set()
        if self._link is not None:
            await self._link.close()

    def crash(self) -> None:
        """Drop the connection at once, answering nothing more, as a dying process would (the
        bridges must then deliver what they hold natively). For tests and drills."""
        self._stopping.set()
        if self._link is not None:
            self._link.abort()
        self._running.set()

    # --- stanzas ---

    def _on_stanza(self, stanza: etree._Element) -> None:
        self.stats.stanzas_in += 1
        sender = stanza.get("from", "")
        if stanza.tag == _MESSAGE and stanza.find(EVENTS) is not None:
            if sender not in self._hosts:
                # Only the bridges of our own domains may drive us; anyone else gets an error.
                self.stats.rejected += 1
                _rejected.log("rejected", "rejected bridge events from %r: not one of component.hosts %s",
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
            log_bridge_error(log, host, err)  # rate-limited (R9.6)
        now = self._clock()
        # A held message we could not read goes back to the server to deliver natively.
        actions: list[Action] = [Route(ref, h) for ref, h in decoded.unroutable]
        for event in decoded.events:
            self.stats.events += 1
            actions.extend(self.core.handle(event, now))
            if isinstance(event, Resync):
                self.synced.set()
        if actions:
            # Persist what is held before the ack that follows it leaves (R5.4); forget what
            # was delivered only after the deliveries left: a crash repeats, never loses.
            self._persist(a for a in actions if isinstance(a, StoreHeld))
            self._send(encode_commands(actions, self.config.jid, decoded.node))
            self._persist(a for a in actions if isinstance(a, DropHeld))

    def _answer_iq(self, iq: etree._Element) -> etree._Element:
        query = iq[0] if len(iq) else None
        kind = iq.get("type")
        if kind == "get" and query is not None and query.tag == ns.q(_DISCO_INFO, "query"):
            reply = _reply(iq, "result")
            q = etree.SubElement(reply, query.tag, nsmap={None: _DISCO_INFO})
            ident = etree.SubElement(q, ns.q(_DISCO_INFO, "identity"))
            ident.attrib.update({"category": "component", "type": "generic", "name": "Multi-Device Messaging"})
            for var in (_DISCO_INFO, _DISCO_ITEMS, _COMMANDS):
                etree.SubElement(q, ns.q(_DISCO_INFO, "feature")).set("var", var)
            return reply
        if kind == "get" and query is not None and query.tag == ns.q(_DISCO_ITEMS, "query") \
                and query.get("node") == _COMMANDS:
            reply = _reply(iq, "result")
            q = etree.SubElement(reply, query.tag, nsmap={None: _DISCO_ITEMS})
            q.set("node", _COMMANDS)
            if self._is_admin(iq):
                item = etree.SubElement(q, ns.q(_DISCO_ITEMS, "item"))
                item.attrib.update({"jid": self.config.jid, "node": COUNTERS_NODE, "name": "MDM counters"})
            return reply
        if kind == "set" and query is not None and query.tag == ns.q(_COMMANDS, "command") \
                and query.get("node") == COUNTERS_NODE:
            if not self._is_admin(iq):
                return _error_reply(iq, "forbidden")
            return self._counters_command(iq, query)
        return _error_reply(iq, "service-unavailable")

    def _is_admin(self, stanza: etree._Element) -> bool:
        return bare(stanza.get("from", "")) in self.config.admins

    def _counters_command(self, iq: etree._Element, command: etree._Element) -> etree._Element:
        """XEP-0050: the R6 counters as a result form, for admins who live in their client."""
        reply = _reply(iq, "result")
        cmd = etree.SubElement(reply, ns.q(_COMMANDS, "command"), nsmap={None: _COMMANDS})
        cmd.attrib.update({"node": COUNTERS_NODE, "status": "completed",
                           "sessionid": command.get("sessionid") or f"c{self.stats.stanzas_in}"})
        form = etree.SubElement(cmd, ns.q(_DATA, "x"), nsmap={None: _DATA})
        form.set("type", "result")
        etree.SubElement(form, ns.q(_DATA, "title")).text = "Multi-Device Messaging counters"
        for name, value in self.counters().items():
            field = etree.SubElement(form, ns.q(_DATA, "field"))
            field.attrib.update({"var": name, "label": name, "type": "text-single"})
            etree.SubElement(field, ns.q(_DATA, "value")).text = f"{value:g}"
        return reply

    def _send(self, stanzas: list[etree._Element]) -> None:
        if self._link is None:
            return
        if self._outbox:  # behind a store write: leaves when it is done (_commit)
            self._outbox.append(("send", stanzas))
            return
        self._link.send(stanzas)


def _describe(e: BaseException) -> str:
    """A reason for the log line, never empty (issue 10: TimeoutError and EOFError have none)."""
    if isinstance(e, TimeoutError) and not str(e):
        return "no answer from the server in time (connect or handshake timeout)"
    if isinstance(e, EOFError):
        return "the server closed the connection before the handshake completed"
    return str(e) or type(e).__name__


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


