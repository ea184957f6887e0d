"""What kind of message is this, and may we copy it? One place, each answer with its reason.

Copying follows XEP-0280 1.0 §6 in full (R2.7): chat messages; normal (or untyped) messages with a
body; and messages of any other non-groupchat type that carry IM payloads: chat states (XEP-0085),
receipts (XEP-0184) or chat markers (XEP-0333), e.g. an untyped <displayed/> (stock Prosody 0.12
and ejabberd 23.01 skip that one). Never copied: errors (routed natively, so they stay with the
stanza they answer), groupchat (R9.2: MUC traffic reaches only the devices in the room),
headlines, private / no-copy messages (R2.5), carbons forged by others, and MUC private messages
*received* from an occupant (§6: the room already sends them to every joined device); a MUC
private message the user *sends* is copied like any chat message.
An *IM* is a copyable message with a <body>: only IMs carry a notification hint (R3.2-R3.4);
read markers and chat states are copied but never notify (R4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import namespaces as ns
from .events import Stanza

_BODY = ns.q(ns.CLIENT, "body")
_PRIVATE = ns.q(ns.CARBONS, "private")
_NO_COPY = ns.q(ns.HINTS, "no-copy")
_MUC_X = ns.q(ns.MUC_USER, "x")
_CARBON_CHILDREN = {ns.q(ns.CARBONS, "received"), ns.q(ns.CARBONS, "sent")}
# R2.7: payloads "typically used in IM" (XEP-0280 §6) that make a bodiless message copyable
_IM_PAYLOAD_NS = {"http://jabber.org/protocol/chatstates", "urn:xmpp:receipts", ns.CHAT_MARKERS}


@dataclass(frozen=True, slots=True)
class Kind:
    copy: bool
    im: bool
    reason: str


def classify(stanza: Stanza, *, incoming: bool) -> Kind:
    mtype = stanza.get("type", "normal")
    has_body = im_payload = False
    for child in stanza:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        if tag == _BODY:
            has_body = True
        elif tag[1:].partition("}")[0] in _IM_PAYLOAD_NS:
            im_payload = True
        elif tag in (_PRIVATE, _NO_COPY):
            return Kind(False, has_body, "private")  # R2.5
        elif tag in _CARBON_CHILDREN:
            return Kind(False, False, "carbon")
        elif incoming and tag == _MUC_X:
            return Kind(False, has_body, "muc-pm")
    if mtype == "chat":
        return Kind(True, has_body, "chat")
    if mtype == "normal":
        if has_body:
            return Kind(True, True, "normal")
        return Kind(im_payload, False, "normal-im-payload" if im_payload else "normal-without-body")  # R2.7
    return Kind(False, False, mtype)  # error, groupchat, headline, unknown (R2.7: none of them is copied)


# Issue 15, the delivery-plan fast path: the child namespaces that leave a chat IM's delivery to
# the user's sessions exactly as for any other chat IM to the bare JID (none of them is private /
# no-copy, a carbon, a MUC <x/>, a Jingle Message Initiation or a read marker the core acts on).
# The core sends this table to the bridges (<plan-rules/>); a message with any other child takes
# the round trip. Kept short on purpose: an unknown payload costs a round trip, never a wrong copy.
PLAN_NEUTRAL = frozenset({
    ns.CLIENT,  # body, subject, thread
    "urn:xmpp:sid:0",  # XEP-0359 stanza-id / origin-id
    "urn:xmpp:mam:tmp",  # ejabberd's <archived/>, beside the archive's stanza-id (issue 23)
    "http://jabber.org/protocol/chatstates",  # XEP-0085 (with a body: an IM like any other)
    "urn:xmpp:receipts",  # XEP-0184 request
    ns.CHAT_MARKERS,  # XEP-0333 <markable/> (markers the user sends are outgoing, never planned)
    "jabber:x:oob",  # XEP-0066 (file links)
    "urn:xmpp:message-correct:0",  # XEP-0308
    "urn:xmpp:reply:0",  # XEP-0461
    "urn:xmpp:fallback:0",  # XEP-0428
    "urn:xmpp:eme:0",  # XEP-0380
    "eu.siacs.conversations.axolotl",  # OMEMO (XEP-0384, as deployed)
    "urn:xmpp:omemo:2",  # OMEMO (XEP-0384)
    "urn:xmpp:openpgp:0",  # XEP-0373
    "urn:xmpp:delay",  # XEP-0203 (offline / archive replays)
    "urn:xmpp:styling:0",  # XEP-0393 unstyled hint
})


def plannable(stanza: Stanza) -> bool:
    """May a delivery plan carry this incoming IM (issue 15)? A chat message with a body whose
    every child is in PLAN_NEUTRAL: copied, an IM, and handled by no rule but R2.1 / R3 / R5."""
    if stanza.get("type") != "chat":
        return False
    has_body = False
    for child in stanza:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        if tag[1:].partition("}")[0] not in PLAN_NEUTRAL:
            return False
        has_body = has_body or tag == _BODY
    return has_body
