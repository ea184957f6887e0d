"""R9.6 limits on the component link: commands split to what the server takes, and repeated bad
input logged once per kind per period with a count (mdm.limits)."""

import logging

from lxml import etree

from mdm.limits import RateLimitedLog, split_commands

B = "urn:x-open-mdm:bridge:0"


def commands(*children: str) -> etree._Element:
    return etree.fromstring(f"<message xmlns='jabber:component:accept' from='mdm.localhost' to='localhost'>"
                            f"<commands xmlns='{B}'>{''.join(children)}</commands></message>")


def deliver(to: str, ref: str | None, size: int) -> str:
    ref_attr = f" ref='{ref}'" if ref else ""
    return (f"<deliver to='{to}'{ref_attr}><forwarded xmlns='urn:xmpp:forward:0'>"
            f"<message xmlns='jabber:client'><body>{'x' * size}</body></message></forwarded></deliver>")


def commands_of(parts: list[bytes]) -> list[list[tuple[str, str | None]]]:
    out = []
    for data in parts:
        msg = etree.fromstring(data)
        assert msg.get("to") == "localhost" and msg[0].tag == f"{{{B}}}commands"
        out.append([(etree.QName(c).localname, c.get("ref")) for c in msg[0]])
    return out


def test_R9_6_commands_over_the_server_limit_are_split_in_order_keeping_a_message_with_its_ack():
    # three messages of ~150 KB each copied to two devices, then their acks: 900 KB in one
    # stanza would make Prosody (512 KiB) close the component link
    stanza = commands(deliver("a@localhost/1", "1", 150_000), deliver("a@localhost/2", "1", 150_000),
                      "<ack ref='1'/>",
                      deliver("a@localhost/1", "2", 150_000), deliver("a@localhost/2", "2", 150_000),
                      "<ack ref='2'/>",
                      deliver("a@localhost/2", None, 150_000), "<route ref='3'/>")
    before = etree.tostring(stanza)
    parts = split_commands(stanza, 400_000)
    assert all(len(p) <= 400_000 for p in parts)
    assert commands_of(parts) == [[("deliver", "1"), ("deliver", "1"), ("ack", "1")],
                                  [("deliver", "2"), ("deliver", "2"), ("ack", "2")],
                                  [("deliver", None), ("route", "3")]]
    assert etree.tostring(stanza) == before  # the caller's stanza is left as it was


def test_a_single_command_over_the_limit_is_dropped_and_reported():
    dropped = []
    parts = split_commands(commands(deliver("a@localhost/1", "1", 50_000), "<ack ref='1'/>"), 10_000,
                           lambda el, size: dropped.append((el.get("ref"), size)))
    assert commands_of(parts) == [[("ack", "1")]]  # the bridge routes an ack that reached nobody
    assert dropped and dropped[0][0] == "1" and dropped[0][1] > 50_000


def test_other_stanzas_are_never_split():
    iq = etree.fromstring("<iq xmlns='jabber:component:accept' type='result'><query xmlns='q'>"
                          + "<item/>" * 100 + "</query></iq>")
    assert split_commands(iq, 100) == [etree.tostring(iq)]


def test_R9_6_rate_limited_log_one_line_per_kind_per_period_with_a_count(caplog):
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("test.rl"), period=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.rl"):
        for _ in range(100_000):
            rl.log("unknown", "bridge %s: unknown event", "localhost")
        rl.log("other", "another kind")
        now[0] = 61.0
        rl.log("unknown", "bridge %s: unknown event", "localhost")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bridge localhost: unknown event", "another kind",
                     "bridge localhost: unknown event (and 99999 more like it in the last 61s)"]


def test_rate_limited_log_reset_makes_the_next_occurrence_news(caplog):
    """Issue 10 item 5: a database that failed, recovered and fails again within the period is
    logged again at once (the recovery reset its kind)."""
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("test.rl2"), period=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.rl2"):
        rl.log("failed", "down")
        rl.log("failed", "down")
        now[0] = 10.0
        rl.reset("failed")
        rl.log("failed", "down again")
    assert [r.getMessage() for r in caplog.records] == ["down", "down again"]


def test_R9_6_an_oversized_attribute_is_rejected_with_an_error_naming_it():
    from mdm.bridge_protocol import decode_events
    from mdm.events import SessionBound

    stanza = etree.fromstring(f"<message xmlns='jabber:component:accept' from='localhost'><events xmlns='{B}'>"
                              f"<bind jid='{'a' * 100_000}@localhost/x' sid='1'/>"
                              f"<bind jid='alice@localhost/x' sid='2'/></events></message>")
    decoded = decode_events(stanza, "localhost")
    assert [e.jid for e in decoded.events if isinstance(e, SessionBound)] == ["alice@localhost/x"]
    assert decoded.errors == ["<bind> attribute 'jid' is 100012 bytes long (at most 3071)"]


def test_R9_6_bad_bridge_events_are_logged_once_per_kind_with_a_count(caplog):
    from mdm.limits import log_bridge_error

    logger = logging.getLogger("test.bridge-errors")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for i in range(1000):
            log_bridge_error(logger, "localhost", f"unknown bridge event '{{urn:x}}e{i}'")
            log_bridge_error(logger, "localhost", "<bind> without 'jid'")
    assert [r.getMessage() for r in caplog.records] == [
        "bridge localhost: unknown bridge event '{urn:x}e0'", "bridge localhost: <bind> without 'jid'"]
