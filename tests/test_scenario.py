"""The .scs parser: scansion's format, our verbs, jinja2 rendering, clear errors."""

import re
from pathlib import Path

import pytest

from mdm_harness.scenario import ScenarioError, load_scenarios, parse_scenario

CONFORMANCE = Path(__file__).parent.parent / "conformance"

SCANSION_SCRIPT = """# Carbons, as Prosody's own tests write it
## requirements: R2.3

[Client] Romeo
	jid: romeo@localhost
	password: password
	resource: one

[Client] Juliet
	jid: juliet@localhost/balcony
	password: password

-----

# a comment
Romeo connects

Romeo sends:
	<iq type='set' id='e1'>
		<enable xmlns='urn:xmpp:carbons:2'/>
	</iq>

Romeo receives:
	<iq type='result' id='e1' from="${Romeo's JID}"/>

Juliet receives nothing
Wait 0.5s
Component sets mdm.enabled = false
Component pauses
Component resumes
Romeo disconnects
"""


def test_scansion_script_parses():
    sc = parse_scenario(SCANSION_SCRIPT, "R2.3-carbons")
    assert sc.title == "Carbons, as Prosody's own tests write it"
    assert sc.clients["Juliet"].resource == "balcony" and sc.clients["Romeo"].resource == "one"
    assert [s.verb for s in sc.steps] == ["note", "connects", "sends", "receives", "receives-nothing", "wait", "set",
                                          "pause", "resume", "disconnects"]
    assert sc.steps[0].text == "a comment"
    assert "<enable xmlns='urn:xmpp:carbons:2'/>" in sc.steps[2].xml
    assert sc.steps[5].arg == 0.5 and sc.steps[6].arg == "mdm.enabled = false"
    assert sc.rids == ["R2.3"]


@pytest.mark.parametrize("text, why", [
    ("[Client] A\n\tjid: a@localhost\n\tpassword: p\n-----\nB connects\n", "not a [Client]"),
    ("[Client] A\n\tjid: a@localhost\n\tpassword: p\n-----\nA dances\n", "unknown step"),
    ("[Client] A\n\tjid: a@localhost\n\tpassword: p\n-----\nA sends:\n\nA connects\n", "needs lines"),
    ("[Client] A\n\tjid: a@localhost\n", "no -----"),
    ("[Client] A\n\tpassword: p\n-----\n", "needs jid"),
    ("{% if %}\n-----\n", "template error"),
])
def test_errors_name_the_problem(text, why):
    with pytest.raises(ScenarioError, match=re.escape(why)):
        parse_scenario(text, "bad")


def test_every_conformance_scenario_parses_and_names_its_requirements():
    scenarios = load_scenarios([CONFORMANCE])
    assert len(scenarios) >= 15
    for sc in scenarios:
        assert sc.rids, f"{sc.name} cites no requirement"
        assert sc.name.startswith(sc.rids[0])
        assert sc.steps
