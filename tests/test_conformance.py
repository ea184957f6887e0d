"""Every conformance scenario, against a real server with the component (Prosody by default;
--mdm-server picks others). One test per scenario and server, named with the scenario's R-IDs.

``--mdm-server KIND:REGEX`` runs only the scenarios whose names match REGEX on that server: the
test command runs the Debian 12 images so (docker-*-deb12), since the native runs prove those
servers scenario by scenario and the images differ from the Debian 13 ones only in their base."""

import re
from pathlib import Path

import pytest

from mdm_harness.runner import run_scenario
from mdm_harness.scenario import load_scenarios

SCENARIOS = load_scenarios([Path(__file__).parent.parent / "conformance"])


def pytest_generate_tests(metafunc):
    if "server_kind" in metafunc.fixturenames:
        servers = metafunc.config.getoption("--mdm-server") or ["prosody"]
        pairs = [(scenario, kind) for kind, _, select in (s.partition(":") for s in servers)
                 for scenario in SCENARIOS if re.search(select, scenario.name)]
        metafunc.parametrize(("scenario", "server_kind"), pairs,
                             ids=[f"{scenario.name}-{kind}" for scenario, kind in pairs])


@pytest.mark.asyncio
async def test_scenario(scenario, server_kind):
    lines: list[str] = []
    result = await run_scenario(scenario, server_kind, lines.append)
    assert result.passed, "\n".join(lines)
    assert result.steps_run == len(result.scenario.steps)
