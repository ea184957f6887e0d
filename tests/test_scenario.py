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
    ("[Client] A\n\tjid: a@localhost\n\tpassword: p\n\tlogin: sasl3\n-----\n", "login must be one of"),
    ("[Client] A\n\tjid: a@localhost\n\tpassword: p\n\tinline: carbons\n-----\n", "need login: bind2"),
    ("[Client] A\n\tjid: a@localhost\n\tpassword: p\n\tlogin: bind2\n\tinline: carbons, mam\n-----\n",
     "unknown choice(s) mam"),
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


OTHER_PROJECTS_SYNTAX = """# Written the way other projects write them
// a C++ comment in the header
-- and a Lua one
[Client] Romeo
	jid: romeo@localhost
	password: password

-- between blocks
---------

// after the line
-- also after the line
Romeo connects

Romeo sends
	<presence/>

Romeo receives
	<presence/>

Romeo receives: nothing
"""


def test_other_projects_comments_and_verbs_without_colon():
    sc = parse_scenario(OTHER_PROJECTS_SYNTAX, "x")
    assert sc.title == "Written the way other projects write them"
    assert [s.verb for s in sc.steps] == ["note", "note", "connects", "sends", "receives", "receives-nothing"]
    assert [s.text for s in sc.steps[:2]] == ["after the line", "also after the line"]
    assert sc.steps[3].xml == "<presence/>" and sc.matching == "scansion"


def test_matching_profile_and_modules_headers(tmp_path):
    text = ("# t\n## matching: strict\n## server-profile: profiles/p.toml\n## server-modules: pep, vcard4\n"
            "[Client] A\n\tjid: a@localhost\n\tpassword: p\n-----\nA connects\n")
    sc = parse_scenario(text, "t", tmp_path / "t.scs")
    assert sc.matching == "strict"
    assert sc.profile_path == (tmp_path / "profiles" / "p.toml").resolve()
    assert sc.server_modules == ("pep", "vcard4")
    with pytest.raises(ScenarioError, match="matching"):
        parse_scenario(text.replace("strict", "fuzzy"), "t")


def test_one_broken_file_does_not_stop_loading_the_others(tmp_path):
    (tmp_path / "a-good.scs").write_text("[Client] A\n\tjid: a@localhost\n\tpassword: p\n-----\nA connects\n")
    (tmp_path / "b-bad.scs").write_text("[Client] A\n\tjid: a@localhost\n\tpassword: p\n-----\nA dances\n")
    good, bad = load_scenarios([tmp_path])
    assert not good.error and good.steps
    assert "unknown step 'A dances'" in bad.error and bad.name == "b-bad"
    assert bad.for_server("prosody") is bad


def test_conformance_scenarios_keep_strict_matching():
    """No conformance scenario gets weaker (R2.4): all of them opt into the strict rules."""
    assert {sc.matching for sc in load_scenarios([CONFORMANCE])} == {"strict"}


def test_directory_defaults_apply_unless_the_scenario_says_otherwise(tmp_path):
    (tmp_path / "_defaults.txt").write_text("# defaults\n## matching: strict\n## requirements: R2.4\n")
    (tmp_path / "a.scs").write_text("[Client] A\n\tjid: a@localhost\n\tpassword: p\n-----\nA connects\n")
    (tmp_path / "b.scs").write_text("## matching: scansion\n[Client] A\n\tjid: a@localhost\n\tpassword: p\n"
                                    "-----\nA connects\n")
    a, b = load_scenarios([tmp_path])
    assert (a.matching, b.matching) == ("strict", "scansion")
    assert a.rids == b.rids == ["R2.4"]


BIND2_PHONE = """# R9.11 a phone with a modern login
[Client] Phone
	jid: alice@localhost
	password: p
	login: bind2
	inline: carbons, inactive, sm
[Client] Desk
	jid: alice@localhost
	password: p
-----
Phone connects
Phone fails to resume
"""


def test_R9_11_login_lines_make_a_bind2_client_and_ask_the_server_for_sasl2():
    sc = parse_scenario(BIND2_PHONE, "R9.11-x")
    phone, desk = sc.clients["Phone"].login, sc.clients["Desk"].login
    assert (phone.kind, phone.inline) == ("bind2", frozenset({"carbons", "inactive", "sm"}))
    assert (desk.kind, desk.inline) == ("classic", frozenset())
    assert sc.features == ("sasl2", "stream-management")  # SM inline, and resumption
    assert [s.verb for s in sc.steps] == ["connects", "resume-fails"]
    # Bind2 enables carbons inline unless the scenario says otherwise
    default = parse_scenario(BIND2_PHONE.replace("\tinline: carbons, inactive, sm\n", ""), "R9.11-y")
    assert default.clients["Phone"].login.inline == frozenset({"carbons"})


def test_R9_11_an_included_scenario_adds_its_requirements_and_sees_the_includers_variables(tmp_path):
    (tmp_path / "base.scs").write_text("# base\n## requirements: R5.7\n[Client] A\n\tjid: a@localhost\n"
                                      "\tpassword: p\n\tlogin: {{ login|default('classic') }}\n-----\nA connects\n")
    wrapper = tmp_path / "R9.11-wrapper.scs"
    wrapper.write_text("# the wrapper's title\n## requirements: R9.11\n{% set login = 'bind2' %}"
                       "{% include 'base.scs' %}")
    (sc,) = load_scenarios([wrapper])
    assert sc.title == "the wrapper's title" and sc.rids == ["R9.11", "R5.7"]
    assert sc.clients["A"].login.kind == "bind2"
