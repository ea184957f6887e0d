"""What kind of message is this, and may we copy it? One place, each answer with its reason.

Copying follows XEP-0280 §6 (what mod_carbons copies too): chat messages, normal messages with a
body; never errors, groupchat (R9.2: MUC traffic reaches only the devices in the room), headlines,
private / no-copy messages (R2.5), received MUC private messages, or carbons forged by others.
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


@dataclass(frozen=True, slots=True)
class Kind:
    copy: bool
    im: bool
    reason: str


def classify(stanza: Stanza, *, incoming: bool) -> Kind:
    mtype = stanza.get("type", "normal")
    has_body = False
    for child in stanza:
        tag = child.tag
        if tag == _BODY:
            has_body = True
        elif tag in (_PRIVATE, _NO_COPY):
            return Kind(False, has_body, "private")  # R2.5
        elif tag in _CARBON_CHILDREN:
            return Kind(False, False, "carbon")
        elif incoming and tag == _MUC_X:
            return Kind(False, has_body, "muc-pm")
    if mtype == "chat":
        return Kind(True, has_body, "chat")
    if mtype == "normal":
        return Kind(has_body, has_body, "normal" if has_body else "normal-without-body")
    return Kind(False, False, mtype)  # error, groupchat, headline, unknown
