"""The MDM rules, driven directly through the sans-I/O core (no server, no sockets)."""

import pytest

from mdm.core import CoreConfig, MdmCore
from mdm.events import (
    Ack,
    CarbonsToggled,
    ClientStateChanged,
    Deliver,
    MessageFromUser,
    MessageToUser,
    PresenceSent,
    Resync,
    Route,
    SessionBound,
    SessionUnbound,
    StoreHeld,
)

from .helpers import message

ALICE = "alice@localhost"
LAPTOP, MOBILE, LEGACY = f"{ALICE}/laptop", f"{ALICE}/mobile", f"{ALICE}/legacy"


def online(core: MdmCore, jid: str, t: float, carbons: bool = True, priority: int = 0) -> None:
    core.handle(SessionBound(jid), t)
    if carbons:
        core.handle(CarbonsToggled(jid, True), t)
    core.handle(PresenceSent(jid, True, priority), t)


@pytest.fixture
def core() -> MdmCore:
    c = MdmCore(CoreConfig(active_window=300))
    online(c, MOBILE, 0.0)
    online(c, LAPTOP, 1.0)  # the laptop sent presence last: the active client
    return c


def deliveries(actions) -> dict[str, Deliver]:
    out: dict[str, Deliver] = {}
    for a in actions:
        if isinstance(a, Deliver):
            assert a.to not in out, f"{a.to} got two copies (R2.4)"
            out[a.to] = a
    return out


def test_R2_1_bare_jid_reaches_every_mdm_client_and_acks(core):
    actions = core.handle(MessageToUser("1", message(ALICE)), 2.0)
    d = deliveries(actions)
    assert set(d) == {LAPTOP, MOBILE}
    assert all(x.carbon is None for x in d.values())
    assert actions[-1] == Ack("1", ALICE)


def test_R2_1_full_jid_gets_message_others_get_received_carbon(core):
    d = deliveries(core.handle(MessageToUser("1", message(MOBILE)), 2.0))
    assert d[MOBILE].carbon is None
    assert d[LAPTOP].carbon == "received"


def test_R2_1_full_jid_of_offline_resource_is_treated_as_bare(core):
    d = deliveries(core.handle(MessageToUser("1", message(f"{ALICE}/tablet")), 2.0))
    assert set(d) == {LAPTOP, MOBILE} and all(x.carbon is None for x in d.values())


def test_R2_2_unbound_session_gets_nothing_and_nobody_online_routes_natively(core):
    core.handle(SessionUnbound(MOBILE), 2.0)
    assert set(deliveries(core.handle(MessageToUser("1", message(ALICE)), 2.0))) == {LAPTOP}
    core.handle(SessionUnbound(LAPTOP), 3.0)
    assert core.handle(MessageToUser("2", message(ALICE)), 3.0) == [Route("2", ALICE)]


def test_R2_3_sent_im_is_copied_to_other_mdm_clients_without_notification(core):
    actions = core.handle(MessageFromUser(MOBILE, message("bob@localhost", frm=MOBILE)), 2.0)
    assert actions == [Deliver(LAPTOP, actions[0].stanza, False, "sent")]


def test_R2_3_message_to_oneself_is_not_copied_as_sent(core):
    assert core.handle(MessageFromUser(MOBILE, message(ALICE, frm=MOBILE)), 2.0) == []


def test_R2_4_each_session_once_when_mdm_and_top_resource(core):
    online(core, LEGACY, 1.5, carbons=False)
    d = deliveries(core.handle(MessageToUser("1", message(ALICE)), 2.0))
    assert set(d) == {LAPTOP, MOBILE, LEGACY}


@pytest.mark.parametrize("extra", ['<private xmlns="urn:xmpp:carbons:2"/>', '<no-copy xmlns="urn:xmpp:hints"/>'])
def test_R2_5_private_is_routed_natively_and_never_copied(core, extra):
    assert core.handle(MessageToUser("1", message(LAPTOP, extra=extra)), 2.0) == [Route("1", ALICE)]
    assert core.handle(MessageFromUser(LAPTOP, message("bob@localhost", frm=LAPTOP, extra=extra)), 2.0) == []


@pytest.mark.parametrize("type_", ["groupchat", "error", "headline"])
def test_R9_2_non_chat_types_are_routed_natively(core, type_):
    assert core.handle(MessageToUser("1", message(ALICE, type_=type_)), 2.0) == [Route("1", ALICE)]


def test_normal_without_body_is_routed_natively(core):
    assert core.handle(MessageToUser("1", message(ALICE, type_=None, body=None)), 2.0) == [Route("1", ALICE)]


def test_R3_2_only_the_active_client_notifies(core):
    d = deliveries(core.handle(MessageToUser("1", message(ALICE)), 2.0))
    assert d[LAPTOP].notify is True and d[MOBILE].notify is False


def test_R3_1_sending_an_im_makes_a_client_active(core):
    core.handle(MessageFromUser(MOBILE, message("bob@localhost", frm=MOBILE)), 5.0)
    d = deliveries(core.handle(MessageToUser("1", message(ALICE)), 6.0))
    assert d[MOBILE].notify is True and d[LAPTOP].notify is False


def test_R3_1_receiving_does_not_make_a_client_active(core):
    core.handle(MessageToUser("1", message(MOBILE)), 5.0)
    d = deliveries(core.handle(MessageToUser("2", message(ALICE)), 6.0))
    assert d[LAPTOP].notify is True and d[MOBILE].notify is False


def test_R3_3_nobody_active_after_the_window_everyone_notifies(core):
    d = deliveries(core.handle(MessageToUser("1", message(ALICE)), 1.0 + 300.1))
    assert d[LAPTOP].notify is True and d[MOBILE].notify is True


def test_R3_5_background_client_is_never_active_next_takes_over(core):
    core.handle(ClientStateChanged(LAPTOP, False), 2.0)
    actions = core.handle(MessageToUser("1", message(ALICE)), 3.0)
    d = deliveries(actions)
    assert d[MOBILE].notify is True and LAPTOP not in d
    held = [a for a in actions if isinstance(a, StoreHeld)]
    assert [(h.jid, h.delivery.notify) for h in held] == [(LAPTOP, False)]  # R5.2: silent mode
    core.handle(ClientStateChanged(MOBILE, False), 4.0)
    out = [a for a in core.handle(MessageToUser("2", message(ALICE)), 5.0) if isinstance(a, Deliver)]
    # R3.3: nobody active, both notify; quiet mode: the IM flushes the laptop's buffer first (R5.3b)
    assert [(a.to, a.notify, a.delay) for a in out] == [(MOBILE, True, None), (LAPTOP, False, 3.0),
                                                        (LAPTOP, True, None)]


def test_R4_1_R4_2_read_marker_is_copied_and_never_notifies(core):
    marker = '<displayed xmlns="urn:xmpp:chat-markers:0" id="x"/>'
    out = core.handle(MessageFromUser(MOBILE, message("bob@localhost", frm=MOBILE, body=None, extra=marker)), 2.0)
    assert [(a.to, a.carbon, a.notify) for a in out] == [(LAPTOP, "sent", None)]
    d = deliveries(core.handle(MessageToUser("1", message(ALICE, body=None, extra=marker)), 2.0))
    assert {a.notify for a in d.values()} == {None}


def test_R4_2_read_marker_does_not_make_the_sender_active(core):
    marker = '<displayed xmlns="urn:xmpp:chat-markers:0" id="x"/>'
    core.handle(MessageFromUser(MOBILE, message("bob@localhost", frm=MOBILE, body=None, extra=marker)), 2.0)
    d = deliveries(core.handle(MessageToUser("1", message(ALICE)), 3.0))
    assert d[LAPTOP].notify is True


def test_R9_7_third_party_client_gets_no_hint_and_no_carbons(core):
    online(core, LEGACY, 1.5, carbons=False)
    d = deliveries(core.handle(MessageToUser("1", message(ALICE)), 2.0))
    assert d[LEGACY].notify is None and d[LEGACY].carbon is None
    d = deliveries(core.handle(MessageToUser("2", message(LAPTOP)), 2.0))
    assert LEGACY not in d
    assert LEGACY not in deliveries(core.handle(MessageFromUser(LAPTOP, message("bob@localhost", frm=LAPTOP)), 2.0))


def test_R9_7_negative_priority_third_party_is_no_bare_recipient(core):
    online(core, LEGACY, 1.5, carbons=False, priority=-1)
    assert LEGACY not in deliveries(core.handle(MessageToUser("1", message(ALICE)), 2.0))


def test_user_without_mdm_clients_is_routed_natively():
    core = MdmCore()
    online(core, LEGACY, 0.0, carbons=False)
    assert core.handle(MessageToUser("1", message(ALICE)), 1.0) == [Route("1", ALICE)]


def test_R1_3_disabled_behaves_like_plain_carbons(core):
    core.reconfigure(CoreConfig(enabled=False))
    actions = core.handle(MessageToUser("1", message(ALICE)), 2.0)
    assert actions == [Route("1", ALICE)]  # both are top resources: routing reaches them
    actions = core.handle(MessageToUser("2", message(LAPTOP)), 2.0)
    assert [(a.to, a.carbon, a.notify) for a in actions if isinstance(a, Deliver)] == [(MOBILE, "received", None)]
    assert actions[-1] == Route("2", ALICE)
    sent = core.handle(MessageFromUser(LAPTOP, message("bob@localhost", frm=LAPTOP)), 2.0)
    assert [(a.to, a.carbon, a.notify) for a in sent] == [(MOBILE, "sent", None)]


def test_R1_3_disabled_does_not_track_activity(core):
    core.reconfigure(CoreConfig(enabled=False))
    core.handle(MessageFromUser(MOBILE, message("bob@localhost", frm=MOBILE)), 5.0)
    core.reconfigure(CoreConfig(enabled=True))
    assert deliveries(core.handle(MessageToUser("1", message(ALICE)), 6.0))[LAPTOP].notify is True


def test_resync_forgets_the_hosts_sessions(core):
    core.handle(Resync("localhost"), 2.0)
    assert len(core.sessions) == 0
    assert core.handle(MessageToUser("1", message(ALICE)), 2.0) == [Route("1", ALICE)]


def test_events_for_unknown_sessions_are_harmless(core):
    for ev in (CarbonsToggled("x@localhost/a", True), PresenceSent("x@localhost/a", True),
               ClientStateChanged("x@localhost/a", False), SessionUnbound("x@localhost/a")):
        assert core.handle(ev, 2.0) == []


def test_R3_1_resync_restores_the_active_client_from_idle_times(core):
    core.handle(Resync("localhost"), 100.0)
    for jid, idle in ((LAPTOP, 30.0), (MOBILE, 5.0)):  # the mobile was active more recently
        core.handle(SessionBound(jid), 100.0)
        core.handle(CarbonsToggled(jid, True), 100.0)
        core.handle(PresenceSent(jid, True, 0, idle), 100.0)
    d = deliveries(core.handle(MessageToUser("1", message(ALICE)), 101.0))
    assert d[MOBILE].notify is True and d[LAPTOP].notify is False
