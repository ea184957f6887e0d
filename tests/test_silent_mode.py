"""R5/R6 through the sans-I/O core: what is held, each flush trigger, coalescing, counters."""

import pytest
from lxml import etree

from mdm import buffers
from mdm.core import CoreConfig, MdmCore
from mdm.events import (
    Ack,
    ClientStateChanged,
    Deliver,
    DropHeld,
    MessageToUser,
    Resync,
    SessionBound,
    SessionUnbound,
    StanzaToSession,
    StoreHeld,
    SyncDone,
)

from .helpers import message
from .test_core import ALICE, LAPTOP, MOBILE, online

CHATSTATE = '<composing xmlns="http://jabber.org/protocol/chatstates"/>'


def presence(frm: str, show: str) -> etree._Element:
    return etree.fromstring(f'<presence xmlns="jabber:client" from="{frm}" to="{MOBILE}">'
                            f'<show>{show}</show></presence>')


def iq() -> etree._Element:
    return etree.fromstring(f'<iq xmlns="jabber:client" type="get" id="1" to="{MOBILE}" from="bob@localhost/d"/>')


@pytest.fixture
def core() -> MdmCore:
    c = MdmCore(CoreConfig(buffer_limit=5, total_buffer_limit=50))
    online(c, MOBILE, 0.0)
    online(c, LAPTOP, 1.0)
    c.handle(ClientStateChanged(MOBILE, False), 2.0)  # silent mode: the laptop is active
    return c


def to_mobile(actions):
    return [a for a in actions if isinstance(a, Deliver) and a.to == MOBILE]


def test_R5_2_silent_mode_holds_ims_and_persists_before_ack(core):
    actions = core.handle(MessageToUser("1", message(ALICE)), 3.0)
    assert not to_mobile(actions)
    kinds = [type(a) for a in actions]
    assert kinds.index(StoreHeld) < kinds.index(Ack)
    assert actions[-1] == Ack("1", ALICE, held=False)  # the laptop got it
    assert core.mode(core.sessions.get(MOBILE), 3.0) == "silent"


def test_R5_3a_iq_flushes_then_passes(core):
    core.handle(MessageToUser("1", message(ALICE, body="a")), 3.0)
    out = core.handle(StanzaToSession("2", MOBILE, iq()), 4.0)
    delivered = to_mobile(out)
    assert [d.delay for d in delivered] == [3.0, None]  # held IM (stamped) first, then the iq
    assert delivered[1].stanza.tag.endswith("iq") and delivered[1].ref == "2"
    assert isinstance(out[-1], Ack) and not out[-1].held
    assert core.flushes.by_reason == {buffers.IQ: 1}


def test_R5_3b_im_flushes_in_quiet_mode(core):
    core.handle(StanzaToSession("1", MOBILE, presence("bob@localhost/d", "away")), 3.0)
    core.handle(ClientStateChanged(LAPTOP, False), 3.5)  # nobody active: quiet mode
    assert core.mode(core.sessions.get(MOBILE), 4.0) == "quiet"
    out = to_mobile(core.handle(MessageToUser("2", message(ALICE)), 4.0))
    assert [d.stanza.tag.split("}")[1] for d in out] == ["presence", "message"]
    assert core.flushes.by_reason == {buffers.MESSAGE: 1}


def test_R5_3c_per_client_limit(core):
    for i in range(4):
        assert not to_mobile(core.handle(MessageToUser(str(i), message(ALICE, body=str(i))), 3.0 + i))
    out = to_mobile(core.handle(MessageToUser("5", message(ALICE, body="5")), 8.0))
    assert [d.stanza.findtext("{jabber:client}body") for d in out] == ["0", "1", "2", "3", "5"]
    assert core.flushes.by_reason == {buffers.LIMIT: 1} and core.flushes.flushes_limit_reached == 0


def test_R5_3c_total_limit_flushes_the_largest_and_is_counted_apart(core):
    core.reconfigure(CoreConfig(buffer_limit=100, total_buffer_limit=3))
    for i in range(3):
        core.handle(MessageToUser(str(i), message(ALICE, body=str(i))), 3.0)
    assert core.held_total == 0 and core.flushes.flushes_limit_reached == 1
    assert core.counters(3.0)["MDMBufferFlushesLimitReached"] == 1


def test_R5_3d_active_flushes_in_order_with_stamps(core):
    core.handle(MessageToUser("1", message(ALICE, body="a")), 3.0)
    core.handle(MessageToUser("2", message(ALICE, body="b")), 4.0)
    out = core.handle(ClientStateChanged(MOBILE, True), 10.0)
    delivered = [a for a in out if isinstance(a, Deliver)]
    assert [(d.stanza.findtext("{jabber:client}body"), d.delay, d.ref) for d in delivered] == \
        [("a", 3.0, None), ("b", 4.0, None)]
    assert isinstance(out[-1], DropHeld) and len(out[-1].ids) == 2
    assert core.handle(ClientStateChanged(MOBILE, True), 11.0) == []  # nothing twice
    c = core.counters(10.0)
    assert c["MDMBufferFlushes"] == 1 and c["MDMBufferFlushPacketCount"] == 2
    assert c["MDMBufferAvgQueuedTime"] == pytest.approx(6.5)


def test_R4_2_read_markers_never_flush(core):
    core.handle(ClientStateChanged(LAPTOP, False), 2.5)  # quiet mode
    marker = '<displayed xmlns="urn:xmpp:chat-markers:0" id="x"/>'
    out = core.handle(MessageToUser("1", message(ALICE, body=None, extra=marker)), 3.0)
    assert not [a for a in out if isinstance(a, Deliver)]
    assert out[-1] == Ack("1", ALICE, held=True)


def test_R5_6_coalescing_keeps_latest_presence_and_chat_state_never_ims(core):
    core.handle(StanzaToSession("1", MOBILE, presence("bob@localhost/d", "away")), 3.0)
    core.handle(MessageToUser("2", message(MOBILE, body=None, extra=CHATSTATE)), 3.1)
    core.handle(MessageToUser("3", message(ALICE, body="im1")), 3.2)
    out = core.handle(StanzaToSession("4", MOBILE, presence("bob@localhost/d", "dnd")), 3.3)
    assert any(isinstance(a, DropHeld) for a in out)
    core.handle(MessageToUser("5", message(MOBILE, body=None, extra=CHATSTATE)), 3.4)
    core.handle(MessageToUser("6", message(ALICE, body="im1")), 3.5)
    flushed = to_mobile(core.handle(ClientStateChanged(MOBILE, True), 4.0))
    shapes = [(d.stanza.tag.split("}")[1], d.stanza.findtext("{jabber:client}show"),
               d.stanza.findtext("{jabber:client}body")) for d in flushed]
    assert shapes == [("message", None, "im1"), ("presence", "dnd", None), ("message", None, None),
                      ("message", None, "im1")]


def test_R5_4_session_end_drops_its_buffer(core):
    core.handle(MessageToUser("1", message(ALICE)), 3.0)
    out = core.handle(SessionUnbound(MOBILE), 4.0)
    assert len(out) == 1 and isinstance(out[0], DropHeld) and core.held_total == 0


def test_R5_4_buffers_survive_resync_and_are_pruned_for_gone_sessions(core):
    core.handle(MessageToUser("1", message(ALICE)), 3.0)
    core.handle(Resync("localhost"), 4.0)
    online(core, MOBILE, 4.0)
    core.handle(ClientStateChanged(MOBILE, False), 4.0)
    assert core.handle(SyncDone("localhost"), 4.0) == []
    assert len(core.buffers[MOBILE]) == 1
    core.handle(Resync("localhost"), 5.0)
    out = core.handle(SyncDone("localhost"), 5.0)
    assert [type(a) for a in out] == [DropHeld] and not core.buffers


def test_stanza_for_unknown_session_is_routed_back(core):
    assert core.handle(StanzaToSession("9", "x@localhost/gone", iq()), 3.0)[0].ref == "9"


def test_R1_3_disabled_holds_nothing(core):
    core.reconfigure(CoreConfig(enabled=False))
    out = core.handle(StanzaToSession("1", MOBILE, presence("bob@localhost/d", "away")), 3.0)
    assert [type(a) for a in out] == [Deliver, Ack]
    assert core.counters(3.0)["MDMSilentModeSessions"] == 0


def test_R6_gauges(core):
    core.handle(SessionBound("alice@localhost/legacy"), 3.0)
    c = core.counters(3.0)
    assert (c["MDMSessions"], c["MDMSilentModeSessions"], c["MDMQuietModeSessions"]) == (2, 1, 0)
    core.handle(ClientStateChanged(LAPTOP, False), 3.0)
    c = core.counters(3.0)
    assert (c["MDMSilentModeSessions"], c["MDMQuietModeSessions"]) == (0, 2)


def test_R6_window_forgets_old_flushes(core):
    core.handle(MessageToUser("1", message(ALICE)), 3.0)
    core.handle(ClientStateChanged(MOBILE, True), 4.0)
    assert core.counters(4.0 + 61)["MDMBufferFlushPacketCount"] == 0
    assert core.counters(4.0 + 61)["MDMBufferFlushes"] == 1
