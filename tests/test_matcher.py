"""Scansion-style matching: partial by default, strict on request, wildcards, absent children."""

import pytest
from lxml import etree

from mdm_harness.matcher import Matcher, mismatch, parse_expected

RECEIVED = etree.fromstring(
    '<message xmlns="jabber:client" from="bob@localhost/d" to="alice@localhost" type="chat" id="1">'
    '<body>hi</body><stanza-id xmlns="urn:xmpp:sid:0" id="x"/>'
    '<notify xmlns="urn:x-open-mdm:notify:0" value="true"/></message>')


def check(xml: str) -> str | None:
    (exp,) = parse_expected(xml)
    return mismatch(exp, RECEIVED)


@pytest.mark.parametrize("xml", [
    '<message type="chat"/>',
    '<message from="{scansion:any}"><body>hi</body></message>',
    '<message><body>{scansion:any}</body><notify xmlns="urn:x-open-mdm:notify:0" value="true"/></message>',
    '<message><body>hi</body><delay xmlns="urn:xmpp:delay" h:absent="true"/></message>',
    # children in any order unless strict (servers put what they add in different places)
    '<message><notify xmlns="urn:x-open-mdm:notify:0"/><body>hi</body></message>',
])
def test_matches(xml):
    assert check(xml) is None


@pytest.mark.parametrize("xml, why", [
    ('<presence/>', "expected element"),
    ('<message type="groupchat"/>', "attribute type"),
    ('<message lang="en"/>', "missing attribute"),
    ('<message><body>bye</body></message>', "text"),
    ('<message><notify xmlns="urn:x-open-mdm:notify:0" value="false"/></message>', "value"),
    ('<message><notify xmlns="urn:x-open-mdm:notify:0" h:absent="true"/></message>', "must be absent"),
    ('<message><subject/></message>', "no child"),
    ('<message scansion:strict="true" type="chat"/>', "strict"),
    # under strict, children are matched in order
    ('<message scansion:strict="true" from="{scansion:any}" to="{scansion:any}" type="chat" id="1">'
     '<notify xmlns="urn:x-open-mdm:notify:0" value="true"/><body>hi</body>'
     '<stanza-id xmlns="urn:xmpp:sid:0" id="x"/></message>', "body"),
    # each expected child needs a received child of its own
    ('<message><body>hi</body><body>hi</body></message>', "no child"),
])
def test_mismatches_say_why(xml, why):
    reason = check(xml)
    assert reason is not None and why in reason


def test_several_expected_elements_parse():
    assert len(parse_expected("<presence/>\n<message/>")) == 2


def scansion(expected: str, received: str, matcher: Matcher | None = None) -> str | None:
    (exp,) = parse_expected(expected)
    (got,) = parse_expected(received)
    return (matcher or Matcher("scansion")).mismatch(exp, got)


VERSION = ("<iq type='result' id='v' from='localhost' to='a@localhost/x'><query xmlns='jabber:iq:version'>"
           "<name>Prosody</name><version>0.12.3</version></query></iq>")


@pytest.mark.parametrize("expected", [
    # the top-level stanza is partial: the server adds to/from
    "<iq type='result' id='v'/>",
    # Prosody's version.scs: strict query, its <version/> relaxed explicitly
    "<iq id='v'><query xmlns='jabber:iq:version' scansion:strict='true'><name>Prosody</name>"
    "<version scansion:strict='false'/></query></iq>",
    # strict='false' on a payload lets extra children through
    "<iq id='v'><query xmlns='jabber:iq:version' scansion:strict='false'><name>Prosody</name></query></iq>",
    # the default strictness of a payload is not passed on to its children (an upload slot's
    # <header name='Authorization'></header> matches a header holding a token)
    "<iq id='v'><query xmlns='jabber:iq:version'><name/><version/></query></iq>",
])
def test_scansion_rules_match(expected):
    assert scansion(expected, VERSION) is None


@pytest.mark.parametrize("expected, why", [
    # a payload in its own namespace is strict by default: no child may be missing from the list
    ("<iq id='v'><query xmlns='jabber:iq:version'><name>Prosody</name></query></iq>", "exactly 1 (strict)"),
    # an explicit strict='true' is inherited: <version/> then has to be empty
    ("<iq id='v'><query xmlns='jabber:iq:version' scansion:strict='true'><name>Prosody</name><version/></query></iq>",
     "text is '0.12.3'"),
    ("<iq id='v' scansion:strict='true'/>", "unexpected attributes"),
])
def test_scansion_rules_mismatch(expected, why):
    reason = scansion(expected, VERSION)
    assert reason is not None and why in reason


def test_our_strict_rules_stay_as_they_were():
    """The conformance scenarios' rules (## matching: strict): payloads partial unless marked."""
    exp = "<iq id='v'><query xmlns='jabber:iq:version'><name>Prosody</name></query></iq>"
    assert scansion(exp, VERSION, Matcher("strict")) is None
    assert scansion(exp, VERSION) is not None


def test_captures_bind_once_then_must_match():
    m = Matcher("scansion")
    got = "<message id='a1'><stanza-id xmlns='urn:xmpp:sid:0' id='S1'/></message>"
    assert scansion("<message id='{scansion:capture:first}'/>", got, m) is None
    assert m.captures == {"first": "a1"}
    # a failed match binds nothing
    assert scansion("<message id='{scansion:capture:x}' type='chat'/>", got, m) is not None
    assert "x" not in m.captures
    assert scansion("<message id='{scansion:capture:first}'/>", got, m) is None
    other = "<message id='b2'/>"
    reason = scansion("<message id='{scansion:capture:first}'/>", other, m)
    assert reason is not None and "'b2'" in reason
    # text captures too, and a capture inside a child that had to be searched for
    assert scansion("<message><stanza-id xmlns='urn:xmpp:sid:0' id='{scansion:capture:sid}'/></message>",
                    got, m) is None
    assert m.captures["sid"] == "S1"
