"""Issue 11 (real phones) in the sans-I/O core: R5.7 hibernated = silent mode, R3.6 the push
veto the bridges are told about, R2.7 full XEP-0280 §6 eligibility, R9.4 file-transfer offers to
the active device only."""

import pytest

from mdm.classify import classify
from mdm.core import CoreConfig, MdmCore
from mdm.events import (
    Ack,
    ActiveClient,
    ClientStateChanged,
    Deliver,
    DropHeld,
    MdsPublish,
    MdsUpdated,
    MessageFromUser,
    MessageToUser,
    PresenceSent,
    PushRegistration,
    SessionHibernated,
    SessionUnbound,
    StoreHeld,
)

from .helpers import message
from .test_core import ALICE, LAPTOP, MOBILE, deliveries, online

JMI = "urn:xmpp:jingle-message:0"
FILE = "<description xmlns='urn:xmpp:jingle:apps:file-transfer:5'><file><name>a.png</name></file></description>"
RTP = "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>"


@pytest.fixture
def core() -> MdmCore:
    c = MdmCore(CoreConfig(active_window=300))
    online(c, MOBILE, 0.0)
    online(c, LAPTOP, 1.0)  # the laptop is the active client
    return c


# --- R5.7 ------------------------------------------------------------------------------------

def test_R5_7_hibernated_session_is_held_while_another_client_is_active(core):
    core.handle(SessionHibernated(MOBILE, True), 2.0)
    actions = core.handle(MessageToUser("1", message(ALICE, body="one")), 3.0)
    d = deliveries(actions)
    assert set(d) == {LAPTOP} and d[LAPTOP].notify is True
    assert [a.jid for a in actions if isinstance(a, StoreHeld)] == [MOBILE]
    assert actions[-1] == Ack("1", ALICE)  # delivered to the laptop: not a "held only" ack
    assert core.mode(core.sessions.get(MOBILE), 3.0) == "silent"


def test_R5_7_resumed_in_the_foreground_flushes_once_in_order_with_delay(core):
    core.handle(SessionHibernated(MOBILE, True), 2.0)
    for i, body in enumerate(("one", "two", "three")):
        core.handle(MessageToUser(str(i), message(ALICE, body=body)), 3.0 + i)
    actions = core.handle(SessionHibernated(MOBILE, False), 10.0)
    flushed = [a for a in actions if isinstance(a, Deliver)]
    assert [d.stanza.findtext("{jabber:client}body") for d in flushed] == ["one", "two", "three"]
    assert all(d.to == MOBILE and d.delay is not None and d.notify is False for d in flushed)
    assert isinstance(actions[-1], DropHeld) and len(actions[-1].ids) == 3
    assert core.handle(SessionHibernated(MOBILE, False), 11.0) == []  # nothing twice


def test_R5_7_resumed_but_still_inactive_keeps_its_buffer(core):
    core.handle(ClientStateChanged(MOBILE, False), 2.0)
    core.handle(SessionHibernated(MOBILE, True), 2.5)
    core.handle(MessageToUser("1", message(ALICE)), 3.0)
    assert core.handle(SessionHibernated(MOBILE, False), 4.0) == []
    assert len(core.buffers[MOBILE]) == 1
    assert [a.to for a in core.handle(ClientStateChanged(MOBILE, True), 5.0) if isinstance(a, Deliver)] == [MOBILE]


def test_R5_7_with_no_active_client_a_hibernated_session_is_served_as_stock(core):
    core.handle(SessionHibernated(MOBILE, True), 2.0)
    core.handle(MessageToUser("1", message(ALICE, body="held")), 3.0)
    core.handle(SessionUnbound(LAPTOP), 4.0)  # the laptop is gone: nobody is active
    actions = core.handle(MessageToUser("2", message(ALICE, body="now")), 5.0)
    bodies = [a.stanza.findtext("{jabber:client}body") for a in actions if isinstance(a, Deliver)]
    assert bodies == ["held", "now"]  # the held one first: the order is kept (R5.7)
    assert core.mode(core.sessions.get(MOBILE), 5.0) is None


def test_R5_7_a_hibernated_session_is_never_the_active_client(core):
    core.handle(PresenceSent(MOBILE, True), 2.0)  # the mobile was the last active
    assert core.sessions.active_client(ALICE, 2.0, 300).jid == MOBILE
    core.handle(SessionHibernated(MOBILE, True), 3.0)
    assert core.sessions.active_client(ALICE, 3.0, 300).jid == LAPTOP


def test_R5_4_hibernation_timeout_drops_the_buffer_ims_stay_in_the_archive(core):
    core.handle(SessionHibernated(MOBILE, True), 2.0)
    core.handle(MessageToUser("1", message(ALICE)), 3.0)
    actions = core.handle(SessionUnbound(MOBILE), 400.0)
    assert len(actions) == 1 and isinstance(actions[0], DropHeld) and len(actions[0].ids) == 1
    assert MOBILE not in core.buffers


# --- R3.6 ------------------------------------------------------------------------------------

def test_R3_6_push_users_bridge_is_told_who_is_active_and_for_how_long(core):
    actions = core.handle(PushRegistration(ALICE, True), 10.0)
    assert actions == [ActiveClient(ALICE, LAPTOP, 291.0)]  # active since 1.0, window 300
    assert core.handle(PresenceSent(LAPTOP, True), 20.0) == [ActiveClient(ALICE, LAPTOP, 300.0)]
    sent = core.handle(MessageFromUser(LAPTOP, message("bob@localhost", frm=LAPTOP)), 20.0)
    assert [a for a in sent if isinstance(a, ActiveClient)] == []  # nothing new to tell
    # the laptop goes to the background: the mobile (presence at 0.0) is still within the window
    assert core.handle(ClientStateChanged(LAPTOP, False), 30.0) == [ActiveClient(ALICE, MOBILE, 270.0)]
    # and the mobile's stream hibernates: nobody is active, pushes go out as stock
    assert core.handle(SessionHibernated(MOBILE, True), 40.0) == [ActiveClient(ALICE, None)]
    assert core.handle(SessionHibernated(MOBILE, True), 41.0) == []


def test_R3_6_users_without_push_registration_cost_nothing(core):
    assert [a for a in core.handle(PresenceSent(LAPTOP, True), 20.0) if isinstance(a, ActiveClient)] == []


def test_R3_6_R1_3_mdm_off_lets_every_push_out(core):
    core.handle(PushRegistration(ALICE, True), 10.0)
    assert core.reconfigure(CoreConfig(enabled=False), 11.0) == [ActiveClient(ALICE, None)]


# --- R2.7 ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("type_", "extra", "copy"), [
    (None, "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>", True),
    ("normal", "<received xmlns='urn:xmpp:receipts' id='m1'/>", True),
    (None, "<composing xmlns='http://jabber.org/protocol/chatstates'/>", True),
    (None, "<x xmlns='jabber:x:oob'/>", False),
    ("headline", "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>", False),
    ("groupchat", "<active xmlns='http://jabber.org/protocol/chatstates'/>", False),
    ("error", "<received xmlns='urn:xmpp:receipts' id='m1'/>", False),
])
def test_R2_7_xep_0280_section_6_eligibility(type_, extra, copy):
    kind = classify(message(ALICE, type_=type_, body=None, extra=extra), incoming=True)
    assert (kind.copy, kind.im) == (copy, False)


def test_R2_7_muc_private_messages_received_are_not_copied_sent_ones_are():
    pm = "<x xmlns='http://jabber.org/protocol/muc#user'/>"
    assert not classify(message(ALICE, frm="room@conference.localhost/bob", extra=pm), incoming=True).copy
    assert classify(message("room@conference.localhost/bob", frm=LAPTOP, extra=pm), incoming=False).copy


def test_R2_7_untyped_displayed_reaches_the_other_devices_without_a_hint(core):
    marker = message(ALICE, type_=None, body=None, extra="<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>")
    d = deliveries(core.handle(MessageToUser("1", marker), 2.0))
    assert set(d) == {LAPTOP, MOBILE} and all(x.notify is None for x in d.values())
    sent = message("bob@localhost", frm=LAPTOP, type_=None, body=None,
                   extra="<displayed xmlns='urn:xmpp:chat-markers:0' id='m2'/>")
    d = deliveries(core.handle(MessageFromUser(LAPTOP, sent), 3.0))
    assert set(d) == {MOBILE} and d[MOBILE].carbon == "sent"


# --- R9.4 ------------------------------------------------------------------------------------

def jmi(to: str, action: str, offer: str, inner: str = "", frm: str = "bob@localhost/desktop"):
    payload = f"<{action} xmlns='{JMI}' id='{offer}'>{inner}</{action}>"
    return message(to, frm=frm, type_="chat", body=None, extra=payload)


def test_R9_4_file_offer_reaches_only_the_active_device_and_its_retract_follows(core):
    d = deliveries(core.handle(MessageToUser("1", jmi(ALICE, "propose", "f1", FILE)), 2.0))
    assert set(d) == {LAPTOP}
    d = deliveries(core.handle(MessageToUser("2", jmi(ALICE, "retract", "f1")), 3.0))
    assert set(d) == {LAPTOP}
    assert ("alice@localhost", "f1") not in core.file_offers


def test_R9_4_the_answer_from_the_device_is_not_copied_to_the_others(core):
    core.handle(MessageToUser("1", jmi(ALICE, "propose", "f2", FILE)), 2.0)
    assert core.handle(MessageFromUser(LAPTOP, jmi("bob@localhost/desktop", "proceed", "f2", frm=LAPTOP)), 3.0) == []
    # the offer is done: a later JMI element of that id takes the usual rule
    assert set(deliveries(core.handle(MessageToUser("3", jmi(ALICE, "retract", "f2")), 4.0))) == {LAPTOP, MOBILE}


def test_R9_4_calls_ring_every_device_and_with_nobody_active_the_usual_rule(core):
    assert set(deliveries(core.handle(MessageToUser("1", jmi(ALICE, "propose", "c1", RTP)), 2.0))) == {LAPTOP, MOBILE}
    core.handle(ClientStateChanged(LAPTOP, False), 3.0)
    core.handle(ClientStateChanged(MOBILE, False), 3.0)
    actions = core.handle(MessageToUser("2", jmi(ALICE, "propose", "f3", FILE)), 4.0)
    # nobody active (both in the background, quiet mode): a JMI offer flushes and rings everywhere
    assert set(deliveries(actions)) == {LAPTOP, MOBILE}
    assert ("alice@localhost", "f3") not in core.file_offers


# --- R4.3 ------------------------------------------------------------------------------------

SID = "urn:xmpp:sid:0"


def archived(to: str, msg_id: str, sid: str):
    m = message(to, extra=f"<stanza-id xmlns='{SID}' id='{sid}' by='{ALICE}'/>")
    m.set("id", msg_id)
    return m


def marker(to: str, frm: str, msg_id: str):
    return message(to, frm=frm, body=None, extra=f"<displayed xmlns='urn:xmpp:chat-markers:0' id='{msg_id}'/>")


def test_R4_3_a_displayed_marker_moves_the_mds_node(core):
    core.handle(MessageToUser("1", archived(ALICE, "m1", "S1")), 2.0)
    actions = core.handle(MessageFromUser(MOBILE, marker("bob@localhost/desktop", MOBILE, "m1")), 3.0)
    assert [a for a in actions if isinstance(a, MdsPublish)] == [MdsPublish(ALICE, "bob@localhost", "S1")]
    # the publish coming back from PEP is not turned into a marker again
    assert core.handle(MdsUpdated(ALICE, "bob@localhost", "S1", MOBILE), 4.0) == []
    # nor is a marker for a message we never saw
    assert not [a for a in core.handle(MessageFromUser(MOBILE, marker("bob@localhost", MOBILE, "zz")), 5.0)
                if isinstance(a, MdsPublish)]


def test_R4_3_an_mds_publish_reaches_markers_only_clients_without_waking_a_background_one(core):
    core.handle(MessageToUser("1", archived(ALICE, "m2", "S2")), 2.0)
    d = deliveries(core.handle(MdsUpdated(ALICE, "bob@localhost", "S2", LAPTOP), 3.0))
    assert set(d) == {MOBILE} and d[MOBILE].carbon == "sent" and d[MOBILE].notify is None
    assert d[MOBILE].stanza.find("{urn:xmpp:chat-markers:0}displayed").get("id") == "m2"
    core.handle(MessageToUser("2", archived(ALICE, "m3", "S3")), 4.0)
    core.handle(ClientStateChanged(MOBILE, False), 5.0)
    actions = core.handle(MdsUpdated(ALICE, "bob@localhost", "S3", LAPTOP), 6.0)
    assert not [a for a in actions if isinstance(a, Deliver)]  # R4.2: held, not a wake-up
    assert [a.jid for a in actions if isinstance(a, StoreHeld)] == [MOBILE]
