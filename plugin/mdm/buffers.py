"""Silent / quiet mode buffers (R5): what is held for a client in the background, and why.

The table below is the whole policy for a stanza meant for a session that sent CSI <inactive/>
(XEP-0352), or whose stream is hibernated (XEP-0198) while another client is active (R5.7).
*Silent* mode: the user has another, active client (R5.5); *quiet* mode: nobody
else is active. Every decision returns its reason; the reason labels flush counters and logs.

    stanza                                  silent mode       quiet mode
    <iq/>                                   flush (R5.3a)     flush (R5.3a)
    IM (message with <body>), error msg     hold (R5.2)       flush (R5.3b)
    Jingle Message Initiation (a call)      flush (R9.4)      flush (as mod_csi_simple: it rings)
    read marker / receipt / chat state      hold (R4.2)       hold
    other messages (PEP, headlines …)       hold              hold
    presence                                hold              hold

Held presence is coalesced to the latest per contact, and chat states to the latest per
conversation (R5.6); IMs and iqs never coalesce. A full buffer flushes (R5.3c), and so does the
client's <active/> (R5.3d). A flush delivers in the original order, each stanza with a XEP-0203
<delay/>, and nothing twice: items leave the buffer as they are delivered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from lxml import etree

from . import namespaces as ns
from .events import Deliver, Stanza

CHATSTATES = "http://jabber.org/protocol/chatstates"
_BODY = ns.q(ns.CLIENT, "body")
_IQ = ns.q(ns.CLIENT, "iq")
_PRESENCE = ns.q(ns.CLIENT, "presence")
_MESSAGE = ns.q(ns.CLIENT, "message")


class Decision(Enum):
    HOLD = "hold"
    FLUSH = "flush"


# Flush reasons (R5.3) as the counters and logs name them.
IQ, MESSAGE, LIMIT, TOTAL_LIMIT, ACTIVE = "iq", "message", "limit", "total-limit", "active"
RESUMED = "resumed"  # R5.7: a hibernated session resumed in the foreground
NO_ACTIVE_CLIENT = "no-active-client"  # R5.7: a hibernated session is served as stock again
JINGLE_MESSAGE = "urn:xmpp:jingle-message:0"


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    reason: str
    key: tuple[str, str] | None = None  # coalescing key (R5.6), None: never coalesced


def _payload(stanza: Stanza) -> Stanza:
    """The stanza a client will see: inside a carbon, the forwarded message decides."""
    for child in stanza:
        if etree.QName(child).namespace == ns.CARBONS:
            fwd = child.find(ns.q(ns.FORWARD, "forwarded"))
            if fwd is not None and len(fwd):
                return fwd[len(fwd) - 1]
    return stanza


def verdict(stanza: Stanza, silent: bool) -> Verdict:
    """What to do with ``stanza`` for a session in the background (silent or quiet mode)."""
    if stanza.tag == _IQ:
        return Verdict(Decision.FLUSH, IQ)
    if stanza.tag == _PRESENCE:
        return Verdict(Decision.HOLD, "presence", ("presence", stanza.get("from", "")))
    inner = _payload(stanza)
    if any(isinstance(c.tag, str) and c.tag.startswith("{" + JINGLE_MESSAGE + "}") for c in inner):
        return Verdict(Decision.FLUSH, "jingle-message")  # R9.4: a call rings every device, as stock
    if inner.find(_BODY) is not None or inner.get("type") == "error":
        return Verdict(Decision.HOLD if silent else Decision.FLUSH, "im" if silent else MESSAGE)
    children = [c for c in inner if isinstance(c.tag, str)]
    if children and all(etree.QName(c).namespace in (CHATSTATES, ns.NOTIFY) for c in children) \
            and stanza is inner:
        return Verdict(Decision.HOLD, "chat-state", ("chat-state", inner.get("from", "")))
    return Verdict(Decision.HOLD, "unimportant")


@dataclass(slots=True)
class Held:
    id: int
    delivery: Deliver
    queued_at: float
    key: tuple[str, str] | None = None


@dataclass(slots=True)
class Buffer:
    """One session's held stanzas in arrival order; O(1) append, coalesce and drain."""
    items: dict[int, Held] = field(default_factory=dict)
    by_key: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, held: Held) -> int | None:
        """Append; returns the id of the item it replaced (coalescing), if any."""
        replaced = None
        if held.key is not None:
            replaced = self.by_key.pop(held.key, None)
            if replaced is not None:
                del self.items[replaced]
            self.by_key[held.key] = held.id
        self.items[held.id] = held
        return replaced

    def drain(self) -> list[Held]:
        out = list(self.items.values())
        self.items.clear()
        self.by_key.clear()
        return out

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Held]:
        return iter(self.items.values())
