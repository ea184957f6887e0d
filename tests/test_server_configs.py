"""The generated server configs: what the harness runs the scenarios and benchmarks against."""

from pathlib import Path

import yaml

from mdm_harness.servers import ejabberd, prosody


def test_ejabberd_config_with_the_bridge_keeps_stock_carbons_and_csi_for_fail_open(tmp_path):
    cfg = yaml.safe_load(ejabberd.render_config(5222, 5347, 5280, ack_timeout=2.0))
    mods = cfg["modules"]
    assert mods["mod_mdm_bridge"] == {"component": "mdm.localhost", "ack_timeout": 2}
    # R9.10: they serve whenever the component does not
    assert "mod_carboncopy" in mods and "mod_client_state" in mods
    (service,) = [lst for lst in cfg["listen"] if lst["module"] == "ejabberd_service"]
    assert service["hosts"] == {"mdm.localhost": {"password": ejabberd.SECRET}}
    assert all(lst["ip"] == "127.0.0.1" for lst in cfg["listen"])  # loopback only
    # the HTTP API registers accounts and reads sessions, nothing else, and only from loopback
    (perm,) = cfg["api_permissions"].values()
    assert perm["who"] == {"acl": "loopback"} and set(perm["what"]) == {"register", "user_resources"}


def test_ejabberd_baseline_uses_its_own_carbons(tmp_path):
    cfg = yaml.safe_load(ejabberd.render_config(1, 2, 3, bridge=False,
                                                extra_modules=("mod_client_state",), without_modules=("mod_mam",)))
    mods = cfg["modules"]
    assert "mod_mdm_bridge" not in mods and "mod_carboncopy" in mods and "mod_client_state" in mods
    assert "mod_mam" not in mods


def test_prosody_config_with_the_bridge_replaces_carbons(tmp_path: Path):
    text = prosody.render_config(tmp_path, 5222, 5347)
    assert '"mdm_bridge"' in text and '"carbons"' not in text
    assert '"carbons"' in prosody.render_config(tmp_path, 5222, 5347, bridge=False)
