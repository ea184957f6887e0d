"""Issue 12: what an admin types. ``--version``, ``--help`` in plain text, SIGHUP that says which
changed keys need a restart instead of logging "reconfigured" and ignoring them, the config
``setup`` writes is valid, and ``doctor`` / ``--check --live`` say clearly when nothing answers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mdm import __version__
from mdm.cli import restart_keys
from mdm.config import LIVE_KEYS, from_dict, load
from mdm.setup_cmd import component_toml
from mdm_harness.ports import free_ports

CLI = [sys.executable, "-m", "mdm.cli"]


def test_version_and_plain_help():
    r = subprocess.run([*CLI, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"mdm-component {__version__}"
    for args in (["--help"], ["setup", "--help"], ["doctor", "--help"]):
        out = subprocess.run([*CLI, *args], capture_output=True, text=True).stdout
        assert "``" not in out and ":mod:" not in out, out
        assert "usage: mdm-component" in out


def test_R1_2_restart_keys_are_everything_the_core_does_not_read():
    base = {"component": {"jid": "mdm.example.org", "secret": "s1"}, "buffer": {"store": "/tmp/b.sqlite"}}
    old = from_dict(base)
    assert restart_keys(old, from_dict(base)) == []
    live = from_dict({**base, "mdm": {"enabled": False, "active_window": 5}, "metrics": {"period": 10},
                      "buffer": {"store": "/tmp/b.sqlite", "per_client_limit": 3, "total_limit": 9}})
    assert restart_keys(old, live) == []
    assert sorted(LIVE_KEYS) == ["buffer.per_client_limit", "buffer.total_limit", "mdm.active_window",
                                 "mdm.enabled", "metrics.period"]
    changed = from_dict({"component": {"jid": "mdm.example.org", "secret": "s2", "server_port": 5348},
                         "buffer": {"store": "/tmp/b.sqlite"}, "metrics": {"port": 0}})
    assert restart_keys(old, changed) == ["component.secret", "component.server_port", "metrics.port"]


def test_the_config_setup_writes_is_valid(tmp_path: Path):
    toml = tmp_path / "mdm-component.toml"
    toml.write_text(component_toml("mdm.example.org", "a-secret", "example.org", "127.0.0.1", 5999,
                                   tmp_path / "state"))
    cfg = load(toml)
    assert (cfg.jid, cfg.secret, cfg.server_port, cfg.hosts) == ("mdm.example.org", "a-secret", 5999, ["example.org"])
    assert cfg.store_path == str(tmp_path / "state" / "buffers.sqlite")
    assert cfg.admins == ["admin@example.org"]


@pytest.mark.asyncio
async def test_sighup_names_the_keys_that_need_a_restart(tmp_path: Path):
    (port,) = free_ports(1)  # nothing listens there: the component keeps retrying, that is fine
    config = tmp_path / "mdm.toml"

    def write(secret: str, window: int) -> None:
        config.write_text(f"""[component]
jid = "mdm.localhost"
secret = "{secret}"
server_port = {port}
[mdm]
active_window = {window}
[buffer]
store = "{tmp_path / 'b.sqlite'}"
[metrics]
port = 0
""")
    write("one", 300)
    proc = await asyncio.create_subprocess_exec(*CLI, "--config", str(config), stderr=asyncio.subprocess.PIPE)
    seen: list[str] = []

    async def line_with(text: str) -> str:
        async def scan() -> str:
            while True:
                line = (await proc.stderr.readline()).decode()  # type: ignore[union-attr]
                assert line, f"the component ended before logging {text!r}:\n{''.join(seen)}"
                seen.append(line)
                if text in line:
                    return line
        return await asyncio.wait_for(scan(), 20)
    try:
        await line_with("cannot connect to")  # it runs (and retries the unreachable server)
        write("two", 300)
        proc.send_signal(signal.SIGHUP)
        line = await line_with("SIGHUP:")
        assert "component.secret changed" in line and "only after a restart" in line
        assert not any("reconfigured" in s for s in seen)  # nothing live changed: no "reconfigured"
        write("two", 60)
        proc.send_signal(signal.SIGHUP)
        line = await line_with("reconfigured")
        assert "mdm.active_window=60.0 " in line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def test_doctor_and_check_live_say_when_nothing_answers(tmp_path: Path):
    port, metrics = free_ports(2)
    config = tmp_path / "mdm.toml"
    config.write_text(f"""[component]
jid = "mdm.localhost"
secret = "s"
server_port = {port}
[buffer]
store = "{tmp_path / 'b.sqlite'}"
[metrics]
port = {metrics}
""")
    for args in (["doctor", "--config", str(config), "--timeout", "2"], ["--config", str(config), "--check", "--live"]):
        r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"FAIL 127.0.0.1:{port}: no connection" in r.stdout
        assert r.stdout.rstrip().endswith("the bridge does not answer: users get stock delivery")
