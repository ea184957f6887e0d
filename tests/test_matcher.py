"""Scansion-style matching: partial by default, strict on request, wildcards, absent children."""

import pytest
from lxml import etree

from mdm_harness.matcher import mismatch, parse_expected

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
