"""Issue 15: delivery plans, as the core computes them (sans-I/O; the bridge side is exercised by
conformance/R2.1-R3.2-delivery-plan-fallback.scs on Prosody, ejabberd and the ejabberd cluster)."""

import math

import pytest
from lxml import etree

from mdm.bridge_protocol import decode_events, encode_commands
from mdm.classify import PLAN_NEUTRAL, classify, plannable
from mdm.core import CoreConfig, MdmCore, jingle_message
from mdm.events import (
    Ack,
    CarbonsToggled,
    ClientStateChanged,
    MessageToUser,
    PlannedDelivery,
    PlanRules,
    PresenceSent,
    Resync,
    SessionBound,
    SyncDone,
)

from .helpers import message

HOST = "localhost"
ALICE = f"alice@{HOST}"
LAPTOP, MOBILE = f"{ALICE}/laptop", f"{ALICE}/mobile"
WINDOW = 300.0


def online(core: MdmCore, jid: str, sid: str, t: float) -> None:
    core.handle(SessionBound(jid, sid), t)
    core.handle(CarbonsToggled(jid, True), t)
    core.handle(PresenceSent(jid, True, 0), t)


def planned_core(plans: bool = True) -> MdmCore:
    core = MdmCore(CoreConfig(active_window=WINDOW))
    rules = core.handle(Resync(HOST, plans=plans), 0.0)
    assert rules == ([PlanRules(HOST, tuple(sorted(PLAN_NEUTRAL)))] if plans else [])
    core.handle(SyncDone(HOST), 0.0)
    online(core, MOBILE, "1", 0.0)
    online(core, LAPTOP, "2", 10.0)  # the laptop is the active client until 310 s
    return core


def ack(actions) -> Ack:
    assert isinstance(actions[-1], Ack)
    return actions[-1]


def planned(actions) -> bool:
    return any(isinstance(a, Ack) and a.plan is not None for a in actions)


def test_plan_lasts_until_the_active_clients_window_ends():
    core = planned_core()
    # R3.1: the laptop's window ends at 10 + 300; less the one-second margin, from now (20 s)
    assert ack(core.handle(MessageToUser("1", message(ALICE)), 20.0)).plan == pytest.approx(289.0)


def test_plan_without_an_active_client_lasts_until_an_event():
    core = planned_core()
    # nobody active after the window: every MDM client notifies (R3.3), until someone does something
    assert ack(core.handle(MessageToUser("1", message(ALICE)), 400.0)).plan == math.inf


def test_an_im_ejabberd_archived_before_the_hand_over_gets_a_plan():
    # Issue 23: the ejabberd bridge archives a round-trip IM before handing it over, so it comes
    # with mod_mam's <archived/> and <stanza-id/>: still the plainest IM, still a plan
    core = planned_core()
    archived = ("<archived xmlns='urn:xmpp:mam:tmp' by='alice@localhost' id='17'/>"
                "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='17'/>")
    assert ack(core.handle(MessageToUser("1", message(ALICE, extra=archived)), 20.0)).plan == pytest.approx(289.0)


def test_no_plan_for_a_bridge_that_did_not_ask():
    core = planned_core(plans=False)
    assert ack(core.handle(MessageToUser("1", message(ALICE)), 20.0)).plan is None


@pytest.mark.parametrize("stanza", [
    message(MOBILE),  # to a full JID: the others get <received/> copies
    message(ALICE, type_="normal"),  # only chat messages are planned
    message(ALICE, body=None, extra="<active xmlns='http://jabber.org/protocol/chatstates'/>"),  # no body
    message(ALICE, extra="<private xmlns='urn:xmpp:carbons:2'/>"),  # R2.5
    message(ALICE, extra="<no-copy xmlns='urn:xmpp:hints'/>"),  # R2.5
    message(ALICE, extra="<propose xmlns='urn:xmpp:jingle-message:0' id='j'/>"),  # R9.4
    message(ALICE, extra="<x xmlns='urn:example:unknown'/>"),  # anything not known to be neutral
], ids=["full-jid", "normal", "no-body", "private", "no-copy", "jmi", "unknown-payload"])
def test_no_plan_for_what_another_rule_may_handle(stanza):
    core = planned_core()
    assert not planned(core.handle(MessageToUser("1", stanza), 20.0))


def test_no_plan_while_a_session_is_in_the_background():
    core = planned_core()
    core.handle(ClientStateChanged(MOBILE, False), 15.0)  # R5: the mobile's IMs are held
    assert ack(core.handle(MessageToUser("1", message(ALICE)), 20.0)).plan is None


def test_no_plan_when_mdm_is_disabled():
    core = planned_core()
    core.reconfigure(CoreConfig(enabled=False, active_window=WINDOW))
    assert not planned(core.handle(MessageToUser("1", message(ALICE)), 20.0))


def test_a_config_reload_drops_the_bridges_plans():
    core = planned_core()
    actions = core.reconfigure(CoreConfig(active_window=60.0), now=20.0)
    assert PlanRules(HOST, tuple(sorted(PLAN_NEUTRAL))) in actions


@pytest.mark.parametrize("namespace", sorted(PLAN_NEUTRAL))
def test_every_neutral_payload_keeps_an_im_a_copied_im(namespace):
    # The table the bridges get must agree with the core's own rules (mdm.classify, R2.7)
    stanza = message(ALICE, extra=f"<x xmlns='{namespace}'/>")
    kind = classify(stanza, incoming=True)
    assert kind.copy and kind.im and jingle_message(stanza) is None and plannable(stanza)


def test_R4_3_a_planned_delivery_still_teaches_the_read_state():
    core = planned_core()
    core.handle(PlannedDelivery(ALICE, "bob@localhost", "m1", "archive-7"), 20.0)
    assert core.read_state.stanza_id_of(ALICE, "bob@localhost", "m1") == "archive-7"


def test_codec_plan_attributes_rules_and_reports():
    core = planned_core()
    actions = core.handle(MessageToUser("7", message(ALICE)), 400.0)
    (stanza,) = encode_commands(actions, "mdm.localhost")
    fanout = stanza[0][0]
    assert fanout.get("plan") == "inf" and fanout.get("user") == ALICE
    assert fanout.get("notify") == "1 2"  # nobody active: both notify (R3.3)
    (rules,) = encode_commands([PlanRules(HOST, ("a", "b"))], "mdm.localhost")
    assert rules[0][0].get("neutral") == "a b"
    events = decode_events(_events("<sync plans='1'/><planned to='alice@localhost' from='bob@localhost' id='m1' "
                                   "stanza-id='s1'/>"), HOST)
    assert events.errors == []
    assert events.events[0] == Resync(HOST, plans=True)
    assert events.events[1] == PlannedDelivery(ALICE, "bob@localhost", "m1", "s1")


def _events(inner: str):
    return etree.fromstring(f"<message xmlns='jabber:component:accept' from='{HOST}'>"
                            f"<events xmlns='urn:x-open-mdm:bridge:0'>{inner}</events></message>")
