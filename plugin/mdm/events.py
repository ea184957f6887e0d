"""Events into the core and actions out of it: small immutable records, no I/O.

A bridge (Prosody or ejabberd module) reports what happens on the server; the transport decodes
its stanzas into these events (mdm.bridge_protocol), the core (mdm.core) answers with actions, and
the transport encodes those as bridge commands. ``ref`` is the bridge's delivery id of a message
it handed over and is waiting on: every ref gets exactly one final answer, Route or Ack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lxml import etree

Stanza = etree._Element


# --- events (bridge -> core) -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Resync:
    """The bridge (re)connected for ``host`` and is about to report every live session again.

    On a cluster (R9.8) each node's bridge reports its own sessions: ``node`` names it, and
    ``nodes`` lists every node of the cluster, so the core knows when all have reported."""
    host: str
    node: str = ""
    nodes: tuple[str, ...] = ()
    plans: bool = False  # the bridge can deliver on a plan (issue 15: <sync plans='1'/>)


@dataclass(frozen=True, slots=True)
class SessionBound:
    jid: str  # full JID of the new session
    sid: str | None = None  # the bridge's short id for it, used in compact commands
    node: str = ""  # the cluster node it lives on (R9.8); "" on a single server


@dataclass(frozen=True, slots=True)
class SessionUnbound:
    jid: str


@dataclass(frozen=True, slots=True)
class CarbonsToggled:
    """XEP-0280 enable/disable: a session that enabled carbons is an *MDM client*."""
    jid: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class PresenceSent:
    """A session broadcast its own presence (no 'to'): available or unavailable, with priority."""
    jid: str
    available: bool
    priority: int = 0
    idle: float | None = None  # in a resync: seconds since the session was last active (R3.1)
    client: str | None = None  # XEP-0115 caps node: which software it is (device type, R8.3)


@dataclass(frozen=True, slots=True)
class PushRegistration:
    """XEP-0357: the user has (or no longer has) a push registration: with no live device, the
    server keeps a phantom session for it (R7.1)."""
    user: str  # bare JID
    registered: bool


@dataclass(frozen=True, slots=True)
class SessionHibernated:
    """XEP-0198: the device went away and its session is kept for it (a phantom session, R7.1),
    or it resumed."""
    jid: str
    hibernated: bool


@dataclass(frozen=True, slots=True)
class ClientStateChanged:
    """XEP-0352 CSI: the session went to the background (inactive) or came back (active)."""
    jid: str
    active: bool


@dataclass(frozen=True, slots=True)
class MessageToUser:
    """A message for a local user, held by the bridge under ``ref`` until we answer."""
    ref: str
    stanza: Stanza


@dataclass(frozen=True, slots=True)
class StanzaToSession:
    """Any other stanza the server is about to send to a session in the background (CSI inactive),
    held by the bridge under ``ref``: presence, iqs, natively routed messages (R5)."""
    ref: str
    jid: str
    stanza: Stanza


@dataclass(frozen=True, slots=True)
class SyncDone:
    """The end of the session list that followed a Resync for ``host`` (and ``node``)."""
    host: str
    node: str = ""
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeDown:
    """A cluster node died (R9.8, R9.9): its sessions are gone, without any unbind."""
    host: str
    node: str


@dataclass(frozen=True, slots=True)
class MdsUpdated:
    """XEP-0490: a client of ``user`` published to its Message Displayed Synchronization node: the
    conversation with ``peer`` is read up to the message the archive calls ``stanza_id`` (R4.3)."""
    user: str  # bare JID
    peer: str  # bare JID of the conversation (the item id)
    stanza_id: str
    publisher: str | None = None  # full JID of the session that published, if known


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    """Issue 15: the bridge delivered an IM to ``user`` on its plan, without a round trip; reported
    only so the read state (R4.3) learns the archive's stanza-id of message ``id`` from ``peer``."""
    user: str  # bare JID
    peer: str  # the sender's bare JID
    id: str
    stanza_id: str


@dataclass(frozen=True, slots=True)
class MessageFromUser:
    """A message a local session sent; it goes on to its recipient natively, we only copy it."""
    sender: str  # full JID of the sending session
    stanza: Stanza


Event = Resync | SyncDone | NodeDown | SessionBound | SessionUnbound | CarbonsToggled | PresenceSent \
    | ClientStateChanged | MessageToUser | StanzaToSession | MessageFromUser | MdsUpdated \
    | PushRegistration | SessionHibernated | PlannedDelivery


# --- actions (core -> bridge) ------------------------------------------------------------------

Carbon = Literal["received", "sent"]


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send ``stanza`` to exactly the session ``to``.

    ``carbon`` wraps it as a XEP-0280 copy; ``notify`` adds our notification hint (R3.4) and is
    None for stanzas that carry none (non-IMs, third-party clients)."""
    to: str
    stanza: Stanza
    notify: bool | None = None
    carbon: Carbon | None = None
    # The held message this delivers, if any: a bridge that already delivered that ref natively
    # (the component answered too late) drops the delivery, so nothing arrives twice (R2.4).
    ref: str | None = None
    # When the stanza was put in a buffer (wall clock): delivered with a XEP-0203 <delay/> (R5.3).
    delay: float | None = None
    sid: str | None = None  # the bridge's id of the target session, when it gave one


@dataclass(frozen=True, slots=True)
class Route:
    """Let the server deliver message ``ref`` as it would without us (RFC 6121, offline storage)."""
    ref: str
    user: str  # bare JID whose host's bridge holds the ref


@dataclass(frozen=True, slots=True)
class Ack:
    """We delivered message ``ref`` ourselves, or hold it in a buffer (``held``): the bridge can
    forget it."""
    ref: str
    user: str
    held: bool = False
    # Issue 15: the deliveries of this ack may be repeated by the bridge, without asking, for the
    # user's next plannable IMs (mdm.classify.plannable) for this many seconds (math.inf: until
    # any event about the user), unless an event about the user came in meanwhile.
    plan: float | None = None


@dataclass(frozen=True, slots=True)
class StoreHeld:
    """Persist a held stanza before the ack that follows it goes out (R5.4: nothing lost)."""
    jid: str
    id: int
    delivery: Deliver
    queued_at: float
    key: tuple[str, str] | None = None  # R5.6 coalescing key, kept across restarts


@dataclass(frozen=True, slots=True)
class DropHeld:
    """Forget held stanzas: delivered, coalesced away, or their session ended."""
    jid: str
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ActiveClient:
    """R3.6: tell the bridge whether ``user`` has an active client (R3.1), so the server's push
    module does not wake the user's other devices with an alerting push while there is one.
    ``jid`` is the active client (None: nobody, pushes go out as stock) and ``remaining`` how many
    more seconds it stays active unless it does something (the rest of the R3.1 window)."""
    user: str
    jid: str | None
    remaining: float = 0.0


@dataclass(frozen=True, slots=True)
class MdsPublish:
    """R4.3: publish to ``user``'s XEP-0490 node that the conversation with ``peer`` is read up to
    ``stanza_id`` (a XEP-0333 <displayed/> from one of the user's clients, turned into MDS)."""
    user: str
    peer: str
    stanza_id: str


@dataclass(frozen=True, slots=True)
class PlanRules:
    """Issue 15: tell a bridge that announced plans which child namespaces keep an IM plannable;
    sent in answer to its sync, and again whenever plans must be dropped (a config reload)."""
    host: str
    neutral: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceMode:
    """R1.3 / R9.10: whether the bridges of ``host`` hand messages over (``mdm``) or leave them
    to the server's own carbons and CSI, exactly as without the component (MDM disabled); session
    facts keep coming either way, so switching back needs no resync."""
    host: str
    mdm: bool


Action = Deliver | Route | Ack | StoreHeld | DropHeld | ActiveClient | MdsPublish | PlanRules | ServiceMode
