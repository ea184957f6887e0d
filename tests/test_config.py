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
