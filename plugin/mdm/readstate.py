"""R4.3 read state across the two standards: XEP-0333 chat markers and XEP-0490 Message Displayed
Synchronization (MDS, a PEP node of the user's).

A marker names the message it marks by the message's ``id``; MDS names it by the ``<stanza-id/>``
the user's archive gave it (XEP-0359). The component sees both for every message it hands out,
so it remembers, per user and conversation, which message id got which stanza-id (a bounded
table, oldest forgotten first), and translates:

* a ``<displayed id='X'/>`` one of the user's clients sends to a contact becomes an MDS publish
  for that conversation with X's stanza-id (the bridge publishes it in the user's PEP);
* an MDS publish by one of the user's clients becomes a ``<displayed/>`` for the message with
  that stanza-id, as a XEP-0280 ``<sent/>`` copy to the user's other MDM clients (clients that
  only know markers clear their unread state; nothing is sent to the contact).

Neither ever notifies (R4.2), and both go through the core's silent-mode rules, so a phone in the
background is not woken for them.
"""

from __future__ import annotations

from collections import OrderedDict

from lxml import etree

from . import namespaces as ns
from .events import Stanza

SID = "urn:xmpp:sid:0"
MDS = "urn:xmpp:mds:displayed:0"
_STANZA_ID = ns.q(SID, "stanza-id")
_DISPLAYED = ns.q(ns.CHAT_MARKERS, "displayed")


def stanza_id(stanza: Stanza, by: str) -> str | None:
    """The XEP-0359 stanza-id the archive of ``by`` (a bare JID) gave this message."""
    for el in stanza.iterfind(_STANZA_ID):
        if el.get("by") == by and el.get("id"):
            return el.get("id")
    return None


def displayed_id(stanza: Stanza) -> str | None:
    """The id a XEP-0333 <displayed/> marks, if the message is one."""
    el = stanza.find(_DISPLAYED)
    return el.get("id") if el is not None else None


def displayed_marker(user: str, peer: str, message_id: str) -> Stanza:
    """The marker a markers-only client understands: what the user's own client would have sent."""
    msg = etree.Element(ns.q(ns.CLIENT, "message"), nsmap={None: ns.CLIENT})
    msg.set("from", user)
    msg.set("to", peer)
    msg.set("type", "chat")
    etree.SubElement(msg, _DISPLAYED, nsmap={None: ns.CHAT_MARKERS}).set("id", message_id)
    return msg


class ReadState:
    """(user, peer, message id) <-> archive stanza-id, for the last ``limit`` messages; and the
    last read position per conversation, so a publish we caused is not turned back into a marker."""

    def __init__(self, limit: int = 50000) -> None:
        self.limit = limit
        self._by_message: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._by_stanza_id: dict[tuple[str, str], tuple[str, str]] = {}
        self.read_up_to: dict[tuple[str, str], str] = {}  # (user, peer) -> stanza-id

    def remember(self, user: str, peer: str, message_id: str, sid: str) -> None:
        key = (user, peer, message_id)
        self._by_message[key] = sid
        self._by_message.move_to_end(key)
        self._by_stanza_id[(user, sid)] = (peer, message_id)
        while len(self._by_message) > self.limit:
            (u, _p, _m), old = self._by_message.popitem(last=False)
            self._by_stanza_id.pop((u, old), None)

    def stanza_id_of(self, user: str, peer: str, message_id: str) -> str | None:
        return self._by_message.get((user, peer, message_id))

    def message_of(self, user: str, sid: str) -> tuple[str, str] | None:
        return self._by_stanza_id.get((user, sid))

    def __len__(self) -> int:
        return len(self._by_message)
