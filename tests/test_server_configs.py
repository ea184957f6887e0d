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


def test_R9_11_sasl2_feature_on_ejabberd_offers_starttls_and_fast_where_it_has_it(tmp_path):
    cfg = yaml.safe_load(ejabberd.render_config(1, 2, 3, features=("sasl2",), tls_pem=tmp_path / "c.pem", fast=True))
    (c2s,) = [lst for lst in cfg["listen"] if lst["module"] == "ejabberd_c2s"]
    # 24.12 offers SASL2 only on an encrypted stream: STARTTLS offered, never required
    assert c2s["starttls"] is True and c2s["starttls_required"] is False
    assert "mod_auth_fast" in cfg["modules"]
    plain = yaml.safe_load(ejabberd.render_config(1, 2, 3))
    assert [lst["starttls"] for lst in plain["listen"] if lst["module"] == "ejabberd_c2s"] == [False]
    assert "mod_auth_fast" not in plain["modules"]  # 23.01 has no such module


def test_R9_11_sasl2_feature_on_prosody_loads_what_this_prosody_can_run(tmp_path: Path):
    def modules(**kw: object) -> str:
        return next(line for line in prosody.render_config(tmp_path, 1, 2, **kw).splitlines()
                    if line.startswith("modules_enabled"))
    both = modules(features=("sasl2", "stream-management"), sasl2_extra=("sasl2_sm", "sasl2_fast"))
    assert all(f'"{m}"' in both for m in ("sasl2", "sasl2_bind2", "sasl2_sm", "sasl2_fast", "smacks"))
    no_sm = modules(features=("sasl2",), sasl2_extra=("sasl2_sm", "sasl2_fast"))
    assert '"sasl2_sm"' not in no_sm and '"sasl2_fast"' in no_sm  # inline XEP-0198 needs mod_smacks
    old = modules(features=("sasl2", "stream-management"))  # Prosody 0.12.3: neither
    assert '"sasl2_bind2"' in old and '"sasl2_sm"' not in old and '"sasl2_fast"' not in old
    assert '"sasl2"' not in modules()


def test_R9_11_prosody_sasl2_modules_are_read_from_the_servers_own_files(tmp_path: Path):
    (tmp_path / "mod_smacks.lua").write_text("function do_resume(session, stanza) end\n")
    c2s = 'fire_event("stream-features", { origin = session, features = f%s });\n'
    (tmp_path / "mod_c2s.lua").write_text(c2s % "")  # 0.12.3
    assert prosody.sasl2_modules(tmp_path) == ("sasl2_sm",)
    (tmp_path / "mod_c2s.lua").write_text(c2s % ", stream = attr")  # 13
    assert prosody.sasl2_modules(tmp_path) == ("sasl2_sm", "sasl2_fast")
