"""Every conformance scenario, against a real server with the component (Prosody by default;
--mdm-server picks others). One test per scenario and server, named with the scenario's R-IDs."""

from pathlib import Path

import pytest

from mdm_harness.runner import run_scenario
from mdm_harness.scenario import load_scenarios

SCENARIOS = load_scenarios([Path(__file__).parent.parent / "conformance"])


def pytest_generate_tests(metafunc):
    if "server_kind" in metafunc.fixturenames:
        servers = metafunc.config.getoption("--mdm-server") or ["prosody"]
        metafunc.parametrize("server_kind", servers)


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario(scenario, server_kind):
    lines: list[str] = []
    result = await run_scenario(scenario, server_kind, lines.append)
    assert result.passed, "\n".join(lines)
    assert result.steps_run == len(result.scenario.steps)
