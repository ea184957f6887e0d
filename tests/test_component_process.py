"""`mdm-component` as an admin runs it: a separate process from a TOML file, beside a real Prosody.
R1.2: SIGHUP applies a new [mdm] section live, no session dropped. A wrong secret is a clear error.
Scenarios run with the component as this process, driven by signals (component_remote.py)."""

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from mdm_harness.clients import ClientPool
from mdm_harness.environment import DEFAULT_ACCOUNTS, online
from mdm_harness.runner import run_scenario
from mdm_harness.scenario import load_scenarios
from mdm_harness.servers.prosody import start_prosody

NOTIFY = "{urn:x-open-mdm:notify:0}notify"


def write_config(path, server, *, enabled=True, secret=None):
    path.write_text(f"""[component]
jid = "{server.component_jid}"
secret = "{secret or server.component_secret}"
server_host = "{server.host}"
server_port = {server.component_port}

[mdm]
enabled = {"true" if enabled else "false"}

[buffer]
store = "{path.parent / 'buffers.sqlite'}"

[metrics]
port = 0
""")


async def wait_for_line(stream, text: str, timeout: float = 20.0) -> str:
    async def scan():
        seen = []
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"process ended before logging {text!r}:\n{''.join(seen)}")
            seen.append(line)
            if text in line:
                return line
    return await asyncio.wait_for(scan(), timeout)


async def start_component(config):
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "mdm.cli", "--config", str(config),
                                                stderr=asyncio.subprocess.PIPE)


@pytest.mark.asyncio
async def test_R1_2_component_process_serves_prosody_and_reloads_on_sighup(tmp_path):
    server = await start_prosody(DEFAULT_ACCOUNTS, tmp_path / "prosody")
    pool = ClientPool(server)
    proc = None
    try:
        config = tmp_path / "mdm.toml"
        write_config(config, server)
        proc = await start_component(config)
        await wait_for_line(proc.stderr, "connected to")
        laptop = await online(pool, "alice@localhost", "alice-password", "laptop")
        bob = await online(pool, "bob@localhost", "bob-password", "desktop", carbons=False)

        await bob.send("<message to='alice@localhost' type='chat'><body>1</body></message>")
        got = await laptop.next_stanza()
        assert got is not None and got.find(NOTIFY).get("value") == "true"

        write_config(config, server, enabled=False)
        proc.send_signal(signal.SIGHUP)
        await wait_for_line(proc.stderr, "reconfigured: mdm.enabled=False")
        await bob.send("<message to='alice@localhost' type='chat'><body>2</body></message>")
        got = await laptop.next_stanza()
        assert got is not None and got.find(NOTIFY) is None  # R1.3, and the session survived

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        proc = None
    finally:
        await pool.close()
        if proc is not None:
            proc.kill()
            await proc.wait()
        await server.stop()


@pytest.mark.asyncio
async def test_wrong_secret_is_a_clear_error(tmp_path):
    server = await start_prosody(DEFAULT_ACCOUNTS, tmp_path / "prosody")
    proc = None
    try:
        config = tmp_path / "mdm.toml"
        write_config(config, server, secret="not-the-secret")  # noqa: S106 (a test secret)
        proc = await start_component(config)
        line = await wait_for_line(proc.stderr, "cannot connect")
        assert "ERROR" in line and "not-authorized" in line and "component.secret" in line
    finally:
        if proc is not None:
            proc.terminate()
            await proc.wait()
        await server.stop()


# Scenarios whose steps do to the component what an admin's signals do to the process: pause and
# resume (SIGSTOP/SIGCONT, R2.4), crash (SIGKILL, R9.6), stop and start with held stanzas
# (SIGTERM, R5.4), a live reload (SIGHUP, R1.2), and the phone steps whose barriers read the
# admin API's session view (R5.7, R3.6). The docker backends run every scenario this way.
PROCESS_SCENARIOS = ["R2.4-R9.6-late-answer-not-duplicated", "R9.6-fail-open-component-crash",
                     "R5.4-component-restart-with-buffer", "R1.3-R9.10-mdm-disabled-is-stock-csi",
                     "R5.7-R3.6-hibernated-phone", "R5.3c-limit-flushes"]


@pytest.mark.asyncio
@pytest.mark.parametrize("name", PROCESS_SCENARIOS)
async def test_scenario_with_the_component_as_its_own_process(name):
    (scenario,) = load_scenarios([Path(__file__).parent.parent / "conformance" / f"{name}.scs"])
    lines: list[str] = []
    result = await run_scenario(scenario, "prosody", lines.append, component_process=True)
    assert result.passed, "\n".join(lines)
    assert result.steps_run == len(result.scenario.steps)
