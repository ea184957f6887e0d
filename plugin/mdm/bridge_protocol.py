"""Codec for the bridge protocol (docs/bridge-protocol.md): bridge stanzas <-> core events/actions.

Every stanza is parsed once by the stream (lxml) and decoded here; the actions of one batch of
events are encoded into one command stanza per server host, so several deliveries cross the
link in one stanza.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

from . import namespaces as ns
from .events import (
    Ack,
    Action,
    ActiveClient,
    CarbonsToggled,
    ClientStateChanged,
    Deliver,
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
    Stanza,
    StanzaToSession,
    SyncDone,
)
from .jid import bare, domain
from .limits import MAX_ATTRIBUTE

_DELAY = ns.q(ns.DELAY, "delay")

log = logging.getLogger(__name__)

B = ns.BRIDGE
EVENTS = ns.q(B, "events")
COMMANDS = ns.q(B, "commands")
_FORWARDED = ns.q(ns.FORWARD, "forwarded")
_TRUE = {"true", "1"}
# Bridge event elements by their full tag (a dict lookup per element: QName objects cost more
# than the rest of decoding an IM, issue 15); any other tag is an unknown event.
_EVENT_NAMES = {ns.q(B, name): name for name in (
    "message-in", "session-out", "message-out", "bind", "unbind", "carbons", "presence", "push",
    "hibernated", "csi", "sync", "mds", "node-down", "planned")}
_MESSAGE = ns.q(ns.COMPONENT, "message")
_FANOUT = ns.q(B, "fanout")


class ProtocolError(ValueError):
    """A bridge element we cannot act on; the message says what was wrong."""


@dataclass
class Decoded:
    events: list[Event] = field(default_factory=list)
    # Refs whose payload was unusable: answered with Route so the server delivers them natively.
    unroutable: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    node: str = ""  # the cluster node that sent them (R9.8): commands go back to it


def _forwarded(el: Stanza, only: str | None = None) -> Stanza:
    """The one stanza inside ``el``'s <forwarded/> (of local name ``only``, if given)."""
    fwd = el.find(_FORWARDED)
    if fwd is None or len(fwd) != 1 or (only is not None and _localname(fwd[0]) != only):
        what = f"<{only}/>" if only else "stanza"
        raise ProtocolError(f"<{etree.QName(el).localname}> needs one <forwarded>{what}</forwarded>")
    return fwd[0]


def _localname(el: Stanza) -> str:
    tag = el.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else etree.QName(el).localname


def _check_attributes(el: Stanza) -> None:
    """R9.6: attribute values are bounded (a JID is at most 3 × 1023 bytes); a longer one is an
    error that names the element, not a value the core keeps."""
    for key, value in el.attrib.items():
        if len(value) > MAX_ATTRIBUTE:
            raise ProtocolError(f"<{etree.QName(el).localname}> attribute '{key}' is {len(value)} bytes "
                                f"long (at most {MAX_ATTRIBUTE})")


def _jid_attr(el: Stanza, name: str = "jid") -> str:
    value = el.get(name)
    if not value:
        raise ProtocolError(f"<{etree.QName(el).localname}> without '{name}'")
    return value


def decode_events(stanza: Stanza, host: str) -> Decoded:
    """Decode ``<message from=host><events xmlns=BRIDGE>…</events></message>``."""
    out = Decoded()
    synced: Resync | None = None
    events = stanza.find(EVENTS)
    if events is None:
        out.errors.append("no <events/> payload")
        return out
    node = out.node = events.get("node", "")
    for el in events:
        if not isinstance(el.tag, str):
            continue  # comments, processing instructions
        name = _EVENT_NAMES.get(el.tag)
        try:
            _check_attributes(el)
            if name in ("message-in", "session-out"):
                ref = _jid_attr(el, "ref")
                try:
                    out.events.append(MessageToUser(ref, _forwarded(el, "message")) if name == "message-in"
                                      else StanzaToSession(ref, _jid_attr(el), _forwarded(el)))
                except ProtocolError:
                    out.unroutable.append((ref, host))  # held by the bridge: answered with route
                    raise
            elif name == "message-out":
                out.events.append(MessageFromUser(_jid_attr(el), _forwarded(el, "message")))
            elif name == "bind":
                out.events.append(SessionBound(_jid_attr(el), el.get("sid"), node))
            elif name == "unbind":
                out.events.append(SessionUnbound(_jid_attr(el)))
            elif name == "carbons":
                out.events.append(CarbonsToggled(_jid_attr(el), el.get("enabled") in _TRUE))
            elif name == "presence":
                try:
                    priority = int(el.get("priority", "0"))
                except ValueError:
                    raise ProtocolError(f"<presence> priority {el.get('priority')!r} is not an integer") \
                        from None
                try:
                    idle = float(el.get("idle")) if el.get("idle") is not None else None
                except ValueError:
                    raise ProtocolError(f"<presence> idle {el.get('idle')!r} is not a number") from None
                out.events.append(PresenceSent(_jid_attr(el), el.get("available") in _TRUE, priority, idle,
                                               el.get("caps")))
            elif name == "push":
                out.events.append(PushRegistration(_jid_attr(el), el.get("registered") in _TRUE))
            elif name == "hibernated":
                out.events.append(SessionHibernated(_jid_attr(el), el.get("state") in _TRUE))
            elif name == "csi":
                state = el.get("state")
                if state not in ("active", "inactive"):
                    raise ProtocolError(f"<csi> state must be active or inactive, got {state!r}")
                out.events.append(ClientStateChanged(_jid_attr(el), state == "active"))
            elif name == "sync":
                synced = Resync(host, node, tuple(el.get("nodes", "").split()), el.get("plans") in _TRUE)
                out.events.append(synced)
            elif name == "mds":
                # R4.3: a XEP-0490 publish by one of the user's clients
                out.events.append(MdsUpdated(_jid_attr(el), _jid_attr(el, "peer"), _jid_attr(el, "stanza-id"),
                                             el.get("publisher")))
            elif name == "planned":
                # issue 15: an IM the bridge delivered on its plan (reported for R4.3 only)
                out.events.append(PlannedDelivery(_jid_attr(el, "to"), _jid_attr(el, "from"), _jid_attr(el, "id"),
                                                  _jid_attr(el, "stanza-id")))
            elif name == "node-down":
                out.events.append(NodeDown(host, _jid_attr(el, "node")))
            else:
                raise ProtocolError(f"unknown bridge event {el.tag!r}")
        except ProtocolError as e:
            out.errors.append(str(e))
    if synced is not None:
        out.events.append(SyncDone(host, node, synced.nodes))
    return out


def _hint(value: bool) -> Stanza:
    el = etree.Element(ns.q(ns.NOTIFY, "notify"), nsmap={None: ns.NOTIFY})
    el.set("value", "true" if value else "false")
    return el


def render_delivery(d: Deliver) -> Stanza:
    """The exact stanza the session receives (R3.4 hint and XEP-0280 wrapping included)."""
    original = copy.deepcopy(d.stanza)
    if d.carbon is None:
        out = original
    else:
        out = etree.Element(ns.q(ns.CLIENT, "message"), nsmap={None: ns.CLIENT})
        out.set("from", bare(d.to))
        out.set("to", d.to)
        out.set("type", d.stanza.get("type", "normal"))
        wrapper = etree.SubElement(out, ns.q(ns.CARBONS, d.carbon), nsmap={None: ns.CARBONS})
        fwd = etree.SubElement(wrapper, _FORWARDED, nsmap={None: ns.FORWARD})
        fwd.append(original)
    if d.notify is not None:
        out.append(_hint(d.notify))
    if d.delay is not None and out.find(_DELAY) is None:
        # R5.3: a stanza that waited in a buffer says since when (XEP-0203)
        delay = etree.SubElement(out, _DELAY, nsmap={None: ns.DELAY})
        delay.set("from", domain(d.to))
        delay.set("stamp", datetime.fromtimestamp(d.delay, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return out


def _by_reference(a: Deliver) -> bool:
    """A delivery of the held message itself: the bridge has it, we send only the hint."""
    return a.ref is not None and a.carbon is None and a.delay is None


def _fanouts(actions: list[Action]) -> dict[str, list[Deliver]]:
    """Refs whose every delivery is by reference to a session with a bridge id, and that end in a
    plain ack: those go out as one compact <fanout/> (one element per message, not per device)."""
    per_ref: dict[str, list[Deliver]] = {}
    unfit: set[str] = set()
    for a in actions:
        if isinstance(a, Deliver) and a.ref is not None:
            if _by_reference(a) and a.sid is not None:
                per_ref.setdefault(a.ref, []).append(a)
            else:
                unfit.add(a.ref)
        elif isinstance(a, Ack) and a.held:
            unfit.add(a.ref)
    return {ref: ds for ref, ds in per_ref.items() if ref not in unfit}


def encode_commands(actions: Iterable[Action], component_jid: str, node: str = "") -> list[Stanza]:
    """One ``<message><commands/></message>`` per server host, actions in their order. ``node``:
    the cluster node whose events these answer; its bridge carries them out (R9.8)."""
    actions = list(actions)
    fanouts = _fanouts(actions)
    per_host: dict[str, Stanza] = {}

    def commands_for(host: str) -> Stanza:
        cmds = per_host.get(host)
        if cmds is None:
            msg = etree.Element(_MESSAGE, {"from": component_jid, "to": host}, nsmap={None: ns.COMPONENT})
            cmds = per_host[host] = etree.SubElement(msg, COMMANDS, nsmap={None: B})
            if node:
                cmds.set("node", node)
        return cmds

    for a in actions:
        if isinstance(a, Deliver):
            if a.ref in fanouts:
                continue  # sent with its ack, as one <fanout/>
            el = etree.SubElement(commands_for(domain(a.to)), ns.q(B, "deliver"))
            el.set("to", a.to)
            if a.ref is not None:
                el.set("ref", a.ref)
            if _by_reference(a):
                # The held message itself: the bridge has it, so we send only the hint to add.
                # This spares the server parsing a copy per device (docs/benchmarks.md).
                if a.notify is not None:
                    el.set("notify", "true" if a.notify else "false")
                continue
            fwd = etree.SubElement(el, _FORWARDED, nsmap={None: ns.FORWARD})
            fwd.append(render_delivery(a))
        elif isinstance(a, Ack) and a.ref in fanouts:
            attrib = {"ref": a.ref}
            for attr, want in (("notify", True), ("silent", False), ("plain", None)):
                sids = [d.sid for d in fanouts[a.ref] if d.notify is want]
                if sids:
                    attrib[attr] = " ".join(sids)  # type: ignore[arg-type]
            if a.plan is not None:  # issue 15: reusable for the user's next plannable IMs
                attrib["plan"] = "inf" if math.isinf(a.plan) else f"{a.plan:.1f}"
                attrib["user"] = a.user
            etree.SubElement(commands_for(domain(a.user)), _FANOUT, attrib)
        elif isinstance(a, Route | Ack):
            el = etree.SubElement(commands_for(domain(a.user)), ns.q(B, "route" if isinstance(a, Route)
                                                                     else "ack"))
            el.set("ref", a.ref)
            if isinstance(a, Ack) and a.held:
                el.set("held", "true")  # kept in a buffer: the bridge must not deliver it natively
        elif isinstance(a, ActiveClient):
            # R3.6: who is active, and for how many more seconds (none: the bridge lets pushes out)
            el = etree.SubElement(commands_for(domain(a.user)), ns.q(B, "active"))
            el.set("user", a.user)
            if a.jid is not None:
                el.set("jid", a.jid)
                el.set("for", f"{a.remaining:.0f}")
        elif isinstance(a, MdsPublish):
            # R4.3: the bridge publishes to the user's XEP-0490 node (PEP)
            el = etree.SubElement(commands_for(domain(a.user)), ns.q(B, "mds-publish"))
            el.set("user", a.user)
            el.set("peer", a.peer)
            el.set("stanza-id", a.stanza_id)
        elif isinstance(a, ServiceMode):
            # R1.3: mdm, or the server's own carbons and CSI as if the component were not there
            el = etree.SubElement(commands_for(a.host), ns.q(B, "mode"))
            el.set("value", "mdm" if a.mdm else "stock")
        elif isinstance(a, PlanRules):
            # issue 15: which IMs a plan may carry; the bridge drops the plans it holds
            el = etree.SubElement(commands_for(a.host), ns.q(B, "plan-rules"))
            el.set("neutral", " ".join(a.neutral))
        # StoreHeld / DropHeld are for the component's store, not the bridge.
    return [cmds.getparent() for cmds in per_host.values()]
