"""The bridge codec: every event decodes, bad input is reported and loses nothing, commands batch."""

from lxml import etree

from mdm import namespaces as ns
from mdm.bridge_protocol import decode_events, encode_commands, render_delivery
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
    StanzaToSession,
    SyncDone,
)

from .helpers import message

FWD = (f'<forwarded xmlns="{ns.FORWARD}"><message xmlns="jabber:client" to="alice@localhost" type="chat">'
       '<body>x</body></message></forwarded>')


def events(inner: str) -> etree._Element:
    return etree.fromstring(f'<message xmlns="{ns.COMPONENT}" from="localhost" to="mdm.localhost">'
                            f'<events xmlns="{ns.BRIDGE}">{inner}</events></message>')


def test_every_event_decodes():
    d = decode_events(events(
        '<sync/><bind jid="a@localhost/1"/><carbons jid="a@localhost/1" enabled="true"/>'
        '<presence jid="a@localhost/1" available="true" priority="5"/><csi jid="a@localhost/1" state="inactive"/>'
        f'<message-in ref="7">{FWD}</message-in><message-out jid="a@localhost/1">{FWD}</message-out>'
        f'<session-out ref="8" jid="a@localhost/1">{FWD}</session-out><unbind jid="a@localhost/1"/>'),
        "localhost")
    assert not d.errors
    kinds = [type(e) for e in d.events]
    assert kinds == [Resync, SessionBound, CarbonsToggled, PresenceSent, ClientStateChanged, MessageToUser,
                     MessageFromUser, StanzaToSession, SessionUnbound, SyncDone]
    assert d.events[3] == PresenceSent("a@localhost/1", True, 5)
    assert d.events[5].ref == "7" and d.events[5].stanza.findtext(f"{{{ns.CLIENT}}}body") == "x"


def test_bad_elements_are_reported_and_the_rest_still_decodes():
    d = decode_events(events('<bind/><presence jid="a@l/1" priority="high"/><frob/>'
                             '<csi jid="a@l/1" state="asleep"/><bind jid="a@localhost/2"/>'), "localhost")
    assert len(d.errors) == 4
    assert any("priority" in e for e in d.errors) and any("unknown bridge event" in e for e in d.errors)
    assert d.events == [SessionBound("a@localhost/2")]


def test_held_message_without_payload_is_routed_back_never_lost():
    d = decode_events(events('<message-in ref="9"><forwarded xmlns="urn:xmpp:forward:0"/></message-in>'), "localhost")
    assert d.unroutable == [("9", "localhost")] and d.errors


def test_commands_batch_per_host_in_order():
    m = message("alice@localhost")
    stanzas = encode_commands([Deliver("alice@localhost/a", m, True, ref="1"),
                               Deliver("alice@localhost/b", m, False, "received", "1"),
                               Ack("1", "alice@localhost"), Route("2", "carol@other.example")],
                              "mdm.localhost")
    assert [s.get("to") for s in stanzas] == ["localhost", "other.example"]
    cmds = stanzas[0][0]
    assert [etree.QName(c).localname for c in cmds] == ["deliver", "deliver", "ack"]
    assert cmds[0].get("ref") == "1"


def test_rendered_delivery_carries_hint_and_carbon_wrapper():
    m = message("alice@localhost")
    plain = render_delivery(Deliver("alice@localhost/a", m, None))
    assert plain.find(f"{{{ns.NOTIFY}}}notify") is None
    hinted = render_delivery(Deliver("alice@localhost/a", m, True))
    assert hinted.find(f"{{{ns.NOTIFY}}}notify").get("value") == "true"
    carbon = render_delivery(Deliver("alice@localhost/b", m, False, "received"))
    assert carbon.get("from") == "alice@localhost" and carbon.get("to") == "alice@localhost/b"
    inner = carbon.find(f"{{{ns.CARBONS}}}received/{{{ns.FORWARD}}}forwarded/{{{ns.CLIENT}}}message")
    assert inner is not None and inner.find(f"{{{ns.NOTIFY}}}notify") is None
    assert m.find(f"{{{ns.NOTIFY}}}notify") is None, "the original stanza is never modified"


def test_held_ack_and_delay_stamp():
    m = message("alice@localhost")
    (stanza,) = encode_commands([Ack("1", "alice@localhost", held=True)], "mdm.localhost")
    assert stanza[0][0].get("held") == "true"
    flushed = render_delivery(Deliver("alice@localhost/a", m, False, delay=0.0))
    delay = flushed.find(f"{{{ns.DELAY}}}delay")
    assert delay.get("stamp") == "1970-01-01T00:00:00.000000Z" and delay.get("from") == "localhost"
