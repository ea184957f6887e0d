"""The harness's Python API as a developer would use it: a multi-client test in a few lines."""

import pytest
from lxml import etree

NOTIFY = "{urn:x-open-mdm:notify:0}notify"
BODY = "{jabber:client}body"


@pytest.mark.asyncio
async def test_R2_1_R3_2_fan_out_with_the_pytest_fixture(mdm_env):
    mobile = await mdm_env.online("alice@localhost", "alice-password", "mobile")
    laptop = await mdm_env.online("alice@localhost", "alice-password", "laptop")
    bob = await mdm_env.online("bob@localhost", "bob-password", "desktop", carbons=False)
    await bob.send("<message to='alice@localhost' type='chat'><body>hi</body></message>")
    got = {c: await c.next_stanza() for c in (laptop, mobile)}
    assert all(s is not None and s.findtext(BODY) == "hi" for s in got.values())
    assert got[laptop].find(NOTIFY).get("value") == "true"  # the laptop went online last
    assert got[mobile].find(NOTIFY).get("value") == "false"
    await mdm_env.settle()
    assert not laptop.received and not mobile.received, "exactly once (R2.4)"
    assert etree.QName(got[laptop]).localname == "message"
