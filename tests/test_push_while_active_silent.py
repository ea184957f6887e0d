"""R3.6 on Prosody with ``mdm_push_while_active = "silent"``: while the laptop is active, the
logged-out phone still gets a push (its app wakes up to sync), but without body or sender, so it
shows nothing; once the laptop is gone, pushes alert as stock. A scenario run with a server
profile (profiles are Prosody's), counted by the push app server double."""

import pytest

from mdm_harness.profiles import ServerProfile
from mdm_harness.runner import run_scenario
from mdm_harness.scenario import parse_scenario

SCENARIO = """# R3.6 silent pushes while the user is active elsewhere
[Client] Laptop
	jid: alice@localhost/laptop
	password: alice-password
[Client] Mobile
	jid: alice@localhost/mobile
	password: alice-password
[Client] Bob
	jid: bob@localhost/desktop
	password: bob-password
-----
Mobile connects
Mobile enables push
Mobile disconnects
Laptop connects
Laptop sends:
	<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>
Laptop receives:
	<iq type='result' id='c1'/>
Laptop sends:
	<presence/>
Laptop receives:
	<presence/>
Bob connects
Bob sends:
	<message to="alice@localhost" type="chat" id="a1"><body>at the desk</body></message>
Laptop receives:
	<message id="a1"><body>at the desk</body><notify xmlns="urn:x-open-mdm:notify:0" value="true"/></message>
Push service receives:
	<push node="mobile-push" alerting="false" count="1"/>
Laptop disconnects
Bob sends:
	<message to="alice@localhost" type="chat" id="g1"><body>laptop gone</body></message>
Push service receives:
	<push node="mobile-push" alerting="true" body="laptop gone"/>
Push service receives nothing
"""


@pytest.mark.asyncio
async def test_R3_6_silent_push_option_strips_body_and_sender_while_active():
    scenario = parse_scenario(SCENARIO, "R3.6-silent-push", server="prosody")
    scenario.meta["matching"] = "strict"
    lines: list[str] = []
    profile = ServerProfile(name="silent-push", host={"mdm_push_while_active": "silent"})
    result = await run_scenario(scenario, "prosody", lines.append, profile=profile)
    assert result.passed, "\n".join(lines)
    assert result.steps_run == len(scenario.steps)
