"""Config: defaults, and one-line errors that name the key."""

import subprocess
import sys

import pytest

from mdm.config import ConfigError, from_dict, load

BASE = {"component": {"jid": "mdm.example.org", "secret": "s"}}


def test_defaults():
    cfg = from_dict(BASE)
    assert cfg.core.enabled is True and cfg.core.active_window == 300.0  # R1.1, R3.1
    assert cfg.hosts == ["example.org"]


@pytest.mark.parametrize("data, key", [
    ({"mdm": {"enabled": "yes"}}, "mdm.enabled"),
    ({"mdm": {"active_window": 0}}, "mdm.active_window"),
    ({"mdm": {"active_window": True}}, "mdm.active_window"),
    ({"mdm": {"colour": 1}}, "mdm.colour"),
    ({"component": {"jid": "mdm.example.org", "secret": "s", "server_port": 70000}}, "component.server_port"),
    ({"component": {"jid": "user@example.org", "secret": "s"}}, "component.jid"),
    ({"component": {"jid": "mdm.example.org"}}, "component.secret"),
    ({"log": {"level": "loud"}}, "log.level"),
    ({"nonsense": {}}, "[nonsense]"),
])
def test_bad_values_name_their_key(data, key):
    merged = {**BASE, **data}
    with pytest.raises(ConfigError) as e:
        from_dict(merged)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[mdm\nenabled = true")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml")


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[component]\njid = "mdm.example.org"\nsecret = "s"\n[mdm]\nactive_window = -1\n')
    r = subprocess.run([sys.executable, "-m", "mdm.cli", "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "mdm.active_window" in r.stderr
    cfg.write_text('[component]\njid = "mdm.example.org"\nsecret = "s"\n')
    r = subprocess.run([sys.executable, "-m", "mdm.cli", "--config", str(cfg), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_documented_example_config_is_valid():
    from pathlib import Path
    cfg = load(Path(__file__).parent.parent / "docs" / "mdm-component.example.toml")
    assert cfg.core.buffer_limit == 256 and cfg.metrics_port == 9107 and cfg.admins == ["admin@example.org"]


def run_cli(cfg, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mdm.cli", "--config", str(cfg), *extra],
                          capture_output=True, text=True, timeout=60)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    return r.stderr.strip()


def component_toml(tmp_path, extra: str) -> str:
    return (f'[component]\njid = "mdm.example.org"\nsecret = "s"\nserver_port = 1\n'
            f'[buffer]\nstore = "{tmp_path}/buffers.sqlite"\n[metrics]\nport = 0\n{extra}')


@pytest.mark.parametrize("check", [True, False])
def test_issue_10_5_a_missing_store_directory_is_one_line_naming_the_key(tmp_path, check):
    cfg = tmp_path / "c.toml"
    # the documented example path, on a machine where nobody created it
    cfg.write_text('[component]\njid = "mdm.example.org"\nsecret = "s"\n'
                   f'[buffer]\nstore = "{tmp_path}/var/lib/mdm-component/buffers.sqlite"\n')
    line = one_line(run_cli(cfg, *(["--check"] if check else [])))
    assert "buffer.store" in line and "does not exist" in line and "var/lib/mdm-component" in line


def test_issue_10_5_a_store_path_that_is_a_directory_is_caught_by_check(tmp_path):
    cfg = tmp_path / "c.toml"
    (tmp_path / "store").mkdir()
    cfg.write_text(f'[component]\njid = "mdm.example.org"\nsecret = "s"\n[buffer]\nstore = "{tmp_path}/store"\n'
                   f'[report]\ndirectory = "{tmp_path}/sessions.sqlite"\n')
    line = one_line(run_cli(cfg, "--check"))
    assert line.endswith(f"buffer.store: {tmp_path}/store is a directory, not a file")


@pytest.mark.parametrize("section", ["metrics", "admin"])
def test_issue_10_5_a_port_in_use_is_one_line_naming_the_key(tmp_path, section):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.toml"
        token = '\ntoken = "0123456789abcdef0123"' if section == "admin" else ""
        toml = component_toml(tmp_path, f"[{section}]\nport = {port}{token}\n")
        cfg.write_text(toml.replace("[metrics]\nport = 0\n", "") if section == "metrics" else toml)
        line = one_line(run_cli(cfg))
    assert f"{section}.port: cannot listen on 127.0.0.1:{port}: already in use" in line


def test_issue_10_5_an_unreachable_postgresql_is_one_line_naming_the_key(tmp_path):
    from mdm_harness.ports import free_ports
    port = free_ports(1)[0]  # nothing listens there
    cfg = tmp_path / "c.toml"
    cfg.write_text(component_toml(tmp_path, f'[report]\ndirectory = "postgresql://mdm:secret@127.0.0.1:{port}/mdm"\n'))
    line = one_line(run_cli(cfg, "--check"))
    assert f"report.directory: cannot reach PostgreSQL at postgresql://mdm:***@127.0.0.1:{port}/mdm" in line
    assert "secret" not in line
