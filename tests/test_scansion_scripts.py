"""Scansion scripts written the way Prosody's own are (tests/scansion/), run unchanged against a
real Prosody with the component: other projects' syntax, scansion's matching rules, escaped
account names, server profiles, captures and the sends barrier (issue 13)."""

import dataclasses
from pathlib import Path

import pytest

from mdm_harness.profiles import load_profile
from mdm_harness.runner import run_scenario
from mdm_harness.scenario import load_scenarios

HERE = Path(__file__).parent / "scansion"
SCRIPTS = load_scenarios([HERE])


def test_every_script_parses():
    assert len(SCRIPTS) >= 7
    assert not [s.name for s in SCRIPTS if s.error]
    assert {s.matching for s in SCRIPTS} == {"scansion"}, "these scripts use scansion's own rules"


@pytest.mark.asyncio
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
async def test_script_passes_on_prosody(script):
    lines: list[str] = []
    result = await run_scenario(script, "prosody", lines.append)
    assert result.passed, "\n".join(lines)
    assert result.steps_run == len(result.scenario.steps)


@pytest.mark.asyncio
async def test_the_same_script_fails_under_our_strict_rules():
    """The skipped presence is real: under ## matching: strict the unlisted stanza fails the step."""
    (script,) = [s for s in SCRIPTS if s.name == "unlisted-stanzas-are-skipped"]
    strict = dataclasses.replace(script, meta={**script.meta, "matching": "strict"}, source="")
    lines: list[str] = []
    result = await run_scenario(strict, "prosody", lines.append)
    assert not result.passed
    assert "does not match" in result.failure


def test_profiles_load():
    spec = load_profile(HERE / "profiles" / "prosody-spec.toml")
    clock = load_profile(HERE / "profiles" / "fixed-clock.toml")
    both = spec.merged(clock)
    assert "pep" in both.modules and "tombstones" in both.modules and "carbons" not in both.modules
    assert both.needs_http and {c.jid("localhost") for c in both.components} >= {"pubsub.localhost",
                                                                                  "upload.localhost"}
    assert "os.time" in both.lua and both.host == {"hide_os_type": True}
