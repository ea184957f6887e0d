"""The open-mdm notification hint (R3.4, docs/notify-hint.md) read off a stanza as it came from
the server, as nbxmpp's simplexml Node (Gajim 1.7 and 2.x alike): one place, no Gajim imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NOTIFY = "urn:x-open-mdm:notify:0"
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"


@dataclass(frozen=True)
class Hint:
    contact: str  # who wrote the IM: the message's from, or the forwarded one's for a carbon
    notify: bool


def read_hint(stanza: Any) -> Hint | None:
    """The hint of a received ``<message/>``, or None when it has none (the server decided
    nothing: MDM off, the component down, not an IM; then Gajim's own rules stand, R9.10).
    The hint sits on the outer message, a carbon's wrapper included; nbxmpp unwraps carbons
    before any stanza handler runs, so this must see the stanza before dispatch."""
    if stanza.getName() != "message":
        return None
    # the last one: the server appends its own; one a contact put in the message comes earlier
    tags = stanza.getTags("notify", namespace=NOTIFY)
    if not tags:
        return None
    tag = tags[-1]
    author = stanza
    received = stanza.getTag("received", namespace=CARBONS)
    if received is not None:
        forwarded = received.getTag("forwarded", namespace=FORWARD)
        inner = forwarded.getTag("message") if forwarded is not None else None
        if inner is None:
            return None
        author = inner
    contact = str(author.getAttr("from") or "")
    return Hint(contact, tag.getAttr("value") != "false")


def same_contact(hint: Hint, jid: str) -> bool:
    """Whether a notification for ``jid`` (a bare JID, or a MUC participant's full one) is about
    the IM that carried ``hint``."""
    return jid in (hint.contact, hint.contact.split("/", 1)[0])
