"""The MDM core: a pure state machine, events in, actions out.

Theory of operation
-------------------
Everything that decides which session gets which message, and with or without a notification,
lives in this file; it knows nothing about sockets, asyncio, XML streams or which server runs the
bridge. ``MdmCore.handle(event, now)`` takes one event (mdm.events) and the current time, updates
the session table and returns the actions to carry out, in order.

The rules, by requirement:

* R2.1 fan-out: an IM for a user reaches every MDM client (carbons enabled). Addressed to the bare
  JID (or to a full JID that is not online), every MDM client and every RFC 6121 recipient gets
  the message itself. Addressed to an online full JID, that session gets the message and the other
  MDM clients get a XEP-0280 ``<received/>`` copy, which is what carbons clients expect.
* R2.2: nothing goes to unbound sessions; with no MDM client online the server routes natively,
  so its offline storage keeps the IM when nobody is online.
* R2.3: what a session sends is copied to the user's other MDM clients as ``<sent/>`` carbons.
* R2.4: each session appears at most once in the targets of one message.
* R2.5: private / no-copy messages are routed natively, never copied (mdm.classify).
* R3.1-R3.5: the active client is the session with the latest available presence or sent IM
  within ``active_window``; an incoming IM notifies there only, or everywhere when there is none.
  The hint goes to MDM clients only (R9.7: third-party clients never see our markup).
* R3.5: a session in the background (CSI inactive) is never the active client; nor is a
  hibernated one (XEP-0198, R5.7).
* R3.6: for users with a push registration, the bridge is told who the active client is and for
  how long (``ActiveClient``), so the server's push module sends no alerting push to the user's
  other devices meanwhile; with no active client, pushes go out as stock.
* R2.7: what is copied follows XEP-0280 §6 in full (mdm.classify).
* R9.4: a Jingle Message Initiation file-transfer offer to the bare JID reaches only the active
  client while there is one, and the rest of that offer (retract, accept, reject, proceed) follows
  it; calls ring every device.
* R4.1: read markers (XEP-0333) are chat messages without body: copied like any chat message,
  never notifying (R4.2). R4.3: markers and XEP-0490 MDS are translated both ways (mdm.readstate).
* R1.3: with MDM disabled the bridges are told to leave delivery to the server's own carbons and
  CSI modules (``ServiceMode``), exactly as without the component; what they still hand over
  meanwhile (a bridge that has not switched yet) is served like the server's own mod_carbons:
  native routing plus plain XEP-0280 copies, no hints, nothing held, no counter moves.
* R5: every delivery for a session in the background goes through ``_out``, which holds it or
  flushes by the table in mdm.buffers; held stanzas are persisted (StoreHeld) before the ack.
  R5.7: a hibernated session (XEP-0198) is held like a CSI-inactive one while the user has another
  active client, so neither the server's stream-management queue nor its push module sees what
  it is sent; it is flushed when the session resumes in the foreground.
* R6: the counters (mdm.counters) read the session table and the flush record.
* Issue 15, delivery plans: when an IM to a bare JID is answered with plain deliveries only (no
  session in the background, nothing held or flushed), the ack says for how long the bridge may
  repeat those deliveries for the user's next plannable IMs without asking (``Ack.plan``): until
  the active client's R3.1 window ends, or for ever if nobody is active. Nothing else the core
  keeps changes those deliveries without an event about the user, and every such event makes the
  bridge drop the plan (docs/bridge-protocol.md, "Delivery plans"); a config reload drops them all.

The bridge holds every message it handed us under a ``ref`` until it gets exactly one final
answer: ``Route`` (deliver natively) or ``Ack`` after our own ``Deliver`` actions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from . import buffers
from .buffers import Buffer, Decision, Held
from .classify import PLAN_NEUTRAL, classify, plannable
from .counters import FlushCounters
from .events import (
    Ack,
    Action,
    ActiveClient,
    CarbonsToggled,
    ClientStateChanged,
    Deliver,
    DropHeld,
    Event,
    MdsPublish,
    MdsUpdated,
    MessageFromUser,
    MessageToUser,
    NodeDown,
    PlannedDelivery,
    PlanRules,
    PresenceSent,
    PushRegistration,
    Resync,
    Route,
    ServiceMode,
    SessionBound,
    SessionHibernated,
    SessionUnbound,
    StanzaToSession,
    StoreHeld,
    SyncDone,
)
from .jid import bare, domain, is_full
from .readstate import ReadState, displayed_id, displayed_marker, stanza_id
from .sessions import Session, SessionTable

log = logging.getLogger(__name__)

JINGLE_MESSAGE = "urn:xmpp:jingle-message:0"
JINGLE_FILE_TRANSFER = "urn:xmpp:jingle:apps:file-transfer:5"
_JMI_OFFER_LIMIT = 10000  # R9.4: file-transfer offers remembered (oldest forgotten first)
_PLAN_MARGIN = 1.0  # issue 15: seconds a plan ends before the active client's R3.1 window does


def jingle_message(stanza) -> tuple[str, str, bool] | None:
    """XEP-0353: (action, id, is a file transfer) of a Jingle Message Initiation element, if any."""
    for child in stanza:
        if isinstance(child.tag, str) and child.tag.startswith("{" + JINGLE_MESSAGE + "}"):
            action = child.tag.rpartition("}")[2]
            ft = action == "propose" and child.find(f"{{{JINGLE_FILE_TRANSFER}}}description") is not None
            return action, child.get("id", ""), ft
    return None


@dataclass(slots=True)
class CoreConfig:
    enabled: bool = True  # R1.1: on by default
    active_window: float = 300.0  # R3.1: five minutes
    buffer_limit: int = 256  # R5.3c: stanzas held per client before it flushes (as csi_queue_size)
    total_buffer_limit: int = 10000  # R5.3c: stanzas held by the whole component
    counter_period: float = 60.0  # R6: window of MDMBufferFlushPacketCount / AvgQueuedTime


class MdmCore:
    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config or CoreConfig()
        self.sessions = SessionTable()
        # Buffers by full JID, apart from the sessions: they outlive a resync (R5.4).
        self.buffers: dict[str, Buffer] = {}
        self.held_total = 0
        self._next_id = 1
        self.flushes = FlushCounters(self.config.counter_period)
        # R9.8: the cluster nodes that reported their sessions since we connected, per host
        self.synced: dict[str, set[str]] = {}
        # R3.6: what the bridge was last told about each push user's active client (jid, until)
        self._told_active: dict[str, tuple[str, float]] = {}
        # R9.4: file-transfer offers (user, JMI id) -> the session that got the offer
        self.file_offers: dict[tuple[str, str], str] = {}
        self.read_state = ReadState()  # R4.3: message ids <-> archive stanza-ids
        self.plan_hosts: set[str] = set()  # issue 15: hosts whose bridge delivers on plans

    # R1.2: a live reload swaps the config; sessions and their state stay.
    def reconfigure(self, config: CoreConfig, now: float | None = None) -> list[Action]:
        was_enabled = self.config.enabled
        self.config = config
        self.flushes.period = config.counter_period
        if now is None:
            return []
        # R3.6 / R1.3: a changed window, or MDM switched off, changes what the bridges should veto;
        # issue 15: the plans the bridges hold were computed under the old config: dropped
        switched = config.enabled != was_enabled
        return [*(ServiceMode(host, config.enabled) for host in sorted(self.synced) if switched),
                *(self._plan_rules(host) for host in sorted(self.plan_hosts)),
                *(a for user in sorted(self.sessions.push_users) for a in self._tell_active(user, now))]

    @staticmethod
    def _plan_rules(host: str) -> PlanRules:
        return PlanRules(host, tuple(sorted(PLAN_NEUTRAL)))

    def restore(self, jid: str, held: list[Held]) -> None:
        """Load buffers persisted before a restart (the component's store calls this)."""
        buf = self.buffers.setdefault(jid, Buffer())
        for h in held:
            buf.add(h)
            self.held_total += 1
            self._next_id = max(self._next_id, h.id + 1)

    def handle(self, event: Event, now: float) -> list[Action]:
        actions = self._handle(event, now)
        # R3.6: after anything that can change who is active, tell the bridge (push users only)
        for user in self._affected_push_users(event):
            actions.extend(self._tell_active(user, now))
        return actions

    def _affected_push_users(self, event: Event) -> list[str]:
        push_users = self.sessions.push_users
        if not push_users:
            return []
        match event:
            case PushRegistration(user=user):
                return [user] if user in push_users else []
            case MessageToUser() | StanzaToSession() | Resync() | SessionBound() | PlannedDelivery():
                return []
            case MessageFromUser(sender=jid) | PresenceSent(jid=jid) | ClientStateChanged(jid=jid) \
                    | SessionHibernated(jid=jid) | SessionUnbound(jid=jid):
                user = bare(jid)
                return [user] if user in push_users else []
            case SyncDone(host=host) | NodeDown(host=host):
                return sorted(u for u in push_users if domain(u) == host)
        return []

    def _tell_active(self, user: str, now: float) -> list[Action]:
        """R3.6: an ActiveClient action if the bridge's view of ``user``'s active client is stale:
        another client, none any more, or a later end of the R3.1 window."""
        active = self._notify_target(user, now) if self.config.enabled else None  # R1.3: stock pushes
        told = self._told_active.get(user)
        if active is None:
            if told is None or told[1] <= now:
                self._told_active.pop(user, None)
                return []
            del self._told_active[user]
            return [ActiveClient(user, None)]
        until = (now if active.last_activity is None else active.last_activity) + self.config.active_window
        if told is not None and told[0] == active.jid and told[1] >= until:
            return []
        self._told_active[user] = (active.jid, until)
        return [ActiveClient(user, active.jid, max(0.0, until - now))]

    def _handle(self, event: Event, now: float) -> list[Action]:
        match event:
            case MessageToUser():
                return self._message_to_user(event, now)
            case MessageFromUser():
                return self._message_from_user(event, now)
            case MdsUpdated():
                return self._mds_updated(event, now)
            case StanzaToSession():
                return self._stanza_to_session(event, now)
            case PresenceSent(jid=jid, available=available, priority=priority, idle=idle, client=client):
                s = self.sessions.get(jid)
                if s is not None:
                    s.available, s.priority = available, priority
                    s.client = client or s.client
                    if available:
                        # R3.1; a resync reports how long ago the session was last active
                        s.last_activity = now - idle if idle is not None else now
            case CarbonsToggled(jid=jid, enabled=enabled):
                s = self.sessions.get(jid)
                if s is not None:
                    s.carbons = enabled
            case ClientStateChanged(jid=jid, active=active):
                s = self.sessions.get(jid)
                if s is not None:
                    s.inactive = not active  # R3.5, R5.1
                    if active:
                        return self._flush(s.jid, buffers.ACTIVE, now)  # R5.3d
            case SessionBound(jid=jid, sid=sid, node=node):
                s = self.sessions.bind(jid, sid, node)
                s.bound_at = s.bound_at or now
            case PushRegistration(user=user, registered=registered):
                if registered:
                    self.sessions.push_users.add(user)
                else:
                    self.sessions.push_users.discard(user)
            case SessionHibernated(jid=jid, hibernated=hibernated):
                s = self.sessions.get(jid)
                if s is not None:
                    s.phantom = hibernated  # R7.1; it stays a session
                    if not hibernated and not s.inactive:
                        # R5.7: resumed in the foreground: what was held while it was away, once, in order
                        return self._flush(s.jid, buffers.RESUMED, now)
            case SessionUnbound(jid=jid):
                self.sessions.unbind(jid)  # R2.2: an unbound session is never a target again
                for key in [k for k, v in self.file_offers.items() if v == jid]:
                    del self.file_offers[key]
                return self._discard(jid)
            case Resync(host=host, node=node, plans=plans):
                self.sessions.drop_host(host, node)
                # a reconnected bridge starts with no view of the active clients (R3.6)
                for user in [u for u in self._told_active if domain(u) == host]:
                    del self._told_active[user]
                # R1.3: a bridge starts serving MDM; with MDM off it hands the server back its own
                mode: list[Action] = [] if self.config.enabled else [ServiceMode(host, False)]
                if plans:  # issue 15: the bridge delivers on plans; it starts without any
                    self.plan_hosts.add(host)
                    return [*mode, self._plan_rules(host)]
                self.plan_hosts.discard(host)
                return mode
            case PlannedDelivery(user=user, peer=peer, id=message_id, stanza_id=sid):
                # R4.3: delivered on a plan; the read state still learns the archive's id for it
                if self.config.enabled:
                    self.read_state.remember(user, peer, message_id, sid)
            case SyncDone(host=host, node=node, nodes=nodes):
                synced = self.synced.setdefault(host, set())
                synced.add(node)
                if not set(nodes) <= synced:
                    return []  # R9.8: other nodes' sessions are still to come
                # Buffers restored from the store whose session did not survive the restart.
                actions: list[Action] = []
                for jid in [j for j in self.buffers if domain(j) == host and self.sessions.get(j) is None]:
                    actions.extend(self._discard(jid))
                return actions
            case NodeDown(host=host, node=node):
                # R9.8/R9.9: the node's sessions died with it, no unbind will come: as a logout (R5.4)
                gone = self.sessions.on_node(host, node)
                actions = []
                for jid in gone:
                    self.sessions.unbind(jid)
                    actions.extend(self._discard(jid))
                log.info("cluster node %s of %s is down: %d session(s) gone", node, host, len(gone))
                return actions
            case _:
                raise TypeError(f"unknown event {event!r}")
        return []

    # --- incoming: a message for a local user ----------------------------------------------

    def _message_to_user(self, event: MessageToUser, now: float) -> list[Action]:
        stanza = event.stanza
        to = stanza.get("to") or ""
        user = bare(to)
        kind = classify(stanza, incoming=True)
        if kind.im and stanza.get("id") and self.config.enabled:
            sid = stanza_id(stanza, user)  # R4.3: the archive's name for it, for MDS
            if sid is not None:
                self.read_state.remember(user, bare(stanza.get("from") or ""), stanza.get("id"), sid)
        mdm = self.sessions.mdm_sessions(user)
        if not kind.copy or not mdm:
            # R2.5 private, R9.2 groupchat, errors …; or nobody to copy to: RFC 6121 as usual,
            # including offline storage when nobody is online (R2.2).
            return [Route(event.ref, user)]

        direct = self.sessions.get(to) if is_full(to) else None
        if not self.config.enabled:
            return self._plain_carbons_in(event.ref, user, stanza, direct, mdm)
        jmi = jingle_message(stanza)
        if jmi is not None:
            only = self._file_offer_target(user, jmi, now)
            if only is not None:  # R9.4: the file-transfer offer (and what follows it) to one device
                return [*self._out(only, Deliver(only.jid, stanza, ref=event.ref), now),
                        Ack(event.ref, user)]

        notify_at = self._notify_target(user, now) if kind.im else None
        deliveries: list[tuple[Session, Deliver]] = []
        if direct is not None:
            # Addressed to one online session: it gets the message, the other MDM clients a copy.
            deliveries.append((direct, Deliver(direct.jid, stanza, self._hint(direct, kind.im, notify_at),
                                               ref=event.ref)))
            for s in mdm:
                if s is not direct:
                    deliveries.append((s, Deliver(s.jid, stanza, self._hint(s, kind.im, notify_at), "received",
                                                  event.ref)))
        else:
            targets: dict[str, Session] = {s.jid: s for s in mdm}  # R2.4: each session once
            for s in self.sessions.top_resources(user):
                targets.setdefault(s.jid, s)
            for s in sorted(targets.values(), key=lambda s: s.seq):
                deliveries.append((s, Deliver(s.jid, stanza, self._hint(s, kind.im, notify_at), ref=event.ref)))
        actions: list[Action] = []
        for s, d in deliveries:
            actions.extend(self._out(s, d, now))
        held = not any(isinstance(a, Deliver) for a in actions)
        plan = self._plan(user, stanza, direct, actions, now) if not held else None
        actions.append(Ack(event.ref, user, held=held, plan=plan))
        return actions

    def _plan(self, user: str, stanza, direct: Session | None, actions: list[Action],
              now: float) -> float | None:
        """Issue 15: for how long the bridge may repeat these deliveries for the user's next
        plannable IMs, or None. Only plain deliveries of the message itself to sessions the
        bridge names by id (nothing held, flushed or wrapped), to the bare JID, and only until
        the active client's R3.1 window ends: the one change no event announces."""
        if direct is not None or domain(user) not in self.plan_hosts or not plannable(stanza):
            return None
        for a in actions:
            if not isinstance(a, Deliver) or a.sid is None or a.carbon is not None or a.delay is not None:
                return None
        active = self._notify_target(user, now)
        if active is None:
            return math.inf
        started = now if active.last_activity is None else active.last_activity
        # less a second: the bridge counts from when it gets the plan, a little later than now
        remaining = started + self.config.active_window - now - _PLAN_MARGIN
        return remaining if remaining > 0 else None

    def _file_offer_target(self, user: str, jmi: tuple[str, str, bool], now: float) -> Session | None:
        """R9.4: the one session a Jingle Message Initiation element goes to, or None for the usual
        rule. A file-transfer offer goes to the active client, if any; the retract / proceed /
        accept / reject of that offer follow it."""
        action, offer_id, file_transfer = jmi
        key = (user, offer_id)
        if action == "propose":
            if not file_transfer:
                return None  # a call rings every device, as stock
            active = self._notify_target(user, now)
            if active is None:
                return None  # nobody active: the server's normal rule
            if len(self.file_offers) >= _JMI_OFFER_LIMIT:
                del self.file_offers[next(iter(self.file_offers))]
            self.file_offers[key] = active.jid
            return active
        target = self.file_offers.get(key)
        if target is None:
            return None
        if action in ("retract", "reject", "proceed", "finish"):
            del self.file_offers[key]
        return self.sessions.get(target)

    def _notify_target(self, user: str, now: float) -> Session | None:
        return self.sessions.active_client(user, now, self.config.active_window)

    @staticmethod
    def _hint(s: Session, im: bool, active: Session | None) -> bool | None:
        if not im or not s.is_mdm:
            return None  # R4.2 non-IMs never notify; R9.7 no markup for third-party clients
        return active is None or active is s  # R3.3 / R3.2

    def _plain_carbons_in(self, ref: str, user: str, stanza, direct: Session | None,
                          mdm: list[Session]) -> list[Action]:
        """R1.3: what the server's own XEP-0280 support does. The native recipients get the message
        by routing; carbons go to the MDM clients that routing does not reach."""
        if direct is not None:
            natively = {direct.jid}
        else:
            natively = {s.jid for s in self.sessions.top_resources(user)}
        actions: list[Action] = [Deliver(s.jid, stanza, None, "received", ref) for s in mdm
                                 if s.jid not in natively]
        actions.append(Route(ref, user))
        return actions

    # --- outgoing: a message a local session sent --------------------------------------------

    def _message_from_user(self, event: MessageFromUser, now: float) -> list[Action]:
        stanza, sender = event.stanza, event.sender
        user = bare(sender)
        kind = classify(stanza, incoming=False)
        s = self.sessions.get(sender)
        if s is not None and kind.im and self.config.enabled:
            s.last_activity = now  # R3.1: sending an IM makes the client active
        to = stanza.get("to")
        if not kind.copy or not to or bare(to) == user:
            return []  # messages to oneself reach every device as incoming messages
        jmi = jingle_message(stanza)
        if jmi is not None and (user, jmi[1]) in self.file_offers:
            # R9.4: the answer to a file-transfer offer only one device got: the others never rang
            if jmi[0] in ("reject", "proceed", "retract", "finish"):
                del self.file_offers[(user, jmi[1])]
            return []
        notify = False if kind.im and self.config.enabled else None  # a sent copy never notifies
        actions: list[Action] = []
        marked = displayed_id(stanza) if self.config.enabled else None
        if marked is not None:  # R4.3: the marker also moves the user's MDS node
            peer = bare(to)
            sid = self.read_state.stanza_id_of(user, peer, marked)
            if sid is not None and self.read_state.read_up_to.get((user, peer)) != sid:
                self.read_state.read_up_to[(user, peer)] = sid
                actions.append(MdsPublish(user, peer, sid))
        for other in self.sessions.mdm_sessions(user):
            if other.jid != sender:
                actions.extend(self._out(other, Deliver(other.jid, stanza, notify, "sent"), now))  # R2.3
        return actions

    def _mds_updated(self, event: MdsUpdated, now: float) -> list[Action]:
        """R4.3: an MDS publish reaches the clients that only know markers, as the <displayed/>
        the publishing client would have sent (a silent <sent/> copy; held for a background
        session like any marker, R4.2)."""
        user, peer = event.user, event.peer
        if not self.config.enabled or self.read_state.read_up_to.get((user, peer)) == event.stanza_id:
            return []  # our own publish coming back, or nothing new
        self.read_state.read_up_to[(user, peer)] = event.stanza_id
        found = self.read_state.message_of(user, event.stanza_id)
        if found is None or found[0] != peer:
            return []  # a message we never handed out: nothing a marker could name
        marker = displayed_marker(user, peer, found[1])
        actions: list[Action] = []
        for s in self.sessions.mdm_sessions(user):
            if s.jid != event.publisher:
                actions.extend(self._out(s, Deliver(s.jid, marker, None, "sent"), now))
        return actions

    # --- silent and quiet mode (R5) --------------------------------------------------------

    def _stanza_to_session(self, event: StanzaToSession, now: float) -> list[Action]:
        s = self.sessions.get(event.jid)
        user = bare(event.jid)
        if s is None:
            return [Route(event.ref, user)]
        actions = self._out(s, Deliver(s.jid, event.stanza, ref=event.ref), now)
        actions.append(Ack(event.ref, user, held=not any(isinstance(a, Deliver) for a in actions)))
        return actions

    def mode(self, s: Session, now: float) -> str | None:
        """R5.5: 'silent' (in the background while another client is active), 'quiet' (in the
        background, nobody active) or None (in the foreground). R5.7: a hibernated session that did
        not send <inactive/> is silent while another client is active, else served as stock."""
        if not s.inactive and not s.phantom:
            return None
        active = self._notify_target(s.user, now) is not None
        if not s.inactive:
            return "silent" if active else None
        return "silent" if active else "quiet"

    def _out(self, s: Session, d: Deliver, now: float) -> list[Action]:
        """Deliver ``d`` to ``s`` now, or hold it, by the table in mdm.buffers."""
        if s.sid is not None:
            d = dataclasses.replace(d, sid=s.sid)
        if not self.config.enabled:
            return [d]
        mode = self.mode(s, now)
        if mode is None:
            # R5.7: a hibernated session's buffer when the user's active client went away: what was
            # held first, in order, then this (the server's own rules from here on)
            return [*self._flush(s.jid, buffers.NO_ACTIVE_CLIENT, now), d] if s.jid in self.buffers else [d]
        v = buffers.verdict(d.stanza, silent=mode == "silent")
        if v.decision is Decision.FLUSH:
            return [*self._flush(s.jid, v.reason, now), d]
        held = Held(self._next_id, dataclasses.replace(d, ref=None, delay=now), now, v.key)
        self._next_id += 1
        buf = self.buffers.setdefault(s.jid, Buffer())
        replaced = buf.add(held)
        actions: list[Action] = [StoreHeld(s.jid, held.id, held.delivery, now, v.key)]
        if replaced is not None:  # R5.6: only the latest presence / chat state is kept
            actions.append(DropHeld(s.jid, (replaced,)))
        else:
            self.held_total += 1
        if len(buf) >= self.config.buffer_limit:
            actions.extend(self._flush(s.jid, buffers.LIMIT, now))  # R5.3c
        elif self.held_total >= self.config.total_buffer_limit:
            largest = max(self.buffers, key=lambda j: len(self.buffers[j]))
            actions.extend(self._flush(largest, buffers.TOTAL_LIMIT, now))
        return actions

    def _take(self, jid: str) -> list[Held]:
        buf = self.buffers.pop(jid, None)
        items = buf.drain() if buf else []
        self.held_total -= len(items)
        return items

    def _flush(self, jid: str, reason: str, now: float) -> list[Action]:
        items = self._take(jid)
        if not items:
            return []
        self.flushes.record(now, reason, [now - h.queued_at for h in items], reason == buffers.TOTAL_LIMIT)
        log.debug("flush %s: %d stanza(s), reason %s", jid, len(items), reason)
        # Deliveries first, then forget them: a crash in between repeats, never loses (R5.4).
        return [*(h.delivery for h in items), DropHeld(jid, tuple(h.id for h in items))]

    def _discard(self, jid: str) -> list[Action]:
        """The session ended with a buffer: its IMs were delivered to the active client and stay
        in the archive (R5.4, docs); the rest (presence, chat states) is stale."""
        items = self._take(jid)
        if not items:
            return []
        log.info("session %s ended with %d held stanza(s); dropped (IMs stay in the archive)", jid, len(items))
        return [DropHeld(jid, tuple(h.id for h in items))]

    def counters(self, now: float) -> dict[str, float]:
        """R6, by the vendor's names."""
        sessions = silent = quiet = 0
        for s in self.sessions.all():
            sessions += s.is_mdm
            m = self.mode(s, now)
            silent += m == "silent"
            quiet += m == "quiet"
        packets, avg = self.flushes.window(now)
        if not self.config.enabled:  # R1.3: no MDM counter moves
            sessions = silent = quiet = 0
        return {"MDMSessions": sessions, "MDMSilentModeSessions": silent, "MDMQuietModeSessions": quiet,
                "MDMBufferFlushes": self.flushes.flushes,
                "MDMBufferFlushesLimitReached": self.flushes.flushes_limit_reached,
                "MDMBufferFlushPacketCount": packets, "MDMBufferAvgQueuedTime": avg}
