"""Issue 12: the bridges install the way each server's own modules do, and ``mdm-component setup``
says what is wrong with a server's config before anything starts.

* Prosody: ``mdm-component setup prosody --write`` puts the ``mod_mdm_bridge/`` folder
  (prosody-modules layout) into a ``plugin_paths`` directory and ``conf.d/mdm.cfg.lua`` beside an
  admin's Debian-style config; Prosody, started as the prosody user, loads it, and
  ``mdm-component doctor`` gets the bridge's answer.
* ejabberd: ``setup ejabberd --write`` puts the sources (ejabberd-contrib layout) into the contrib
  modules dir, ``ejabberdctl module_install mod_mdm_bridge`` builds, installs and starts it in a
  running ejabberd (run by ejabberdctl as the ejabberd user, on its own epmd), its conf file opens
  the component's listener, and ``doctor`` gets the bridge's answer.
* The checks: modules that fight with the component, a second copy of the bridge, a host with its
  own module list, missing stock modules on ejabberd, the module configured twice.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from mdm.config import load as load_config
from mdm.setup_cmd import bridge_dir, prosody_release_notes

from .serverinstall import (
    HERE,
    EjabberdInstall,
    ProsodyInstall,
    free_metrics_port,
    have_user,
    missing_tools,
    run,
    setup_args,
    wait_log,
    world_dir,
)

MDM_COMPONENT = [sys.executable, "-m", "mdm.cli"]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs the servers as their own users (needs root)")


def _prosody_ready() -> bool:
    return not missing_tools("prosody", "prosodyctl", "lua5.4") and have_user("prosody")


def _ejabberd_ready() -> bool:
    return not missing_tools("ejabberdctl", "erlc", "epmd") and have_user("ejabberd")


@pytest.fixture
def root():
    import shutil
    d = world_dir("mdm-install-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- Prosody -----------------------------------------------------------------------------------

@needs_root
@pytest.mark.skipif(not _prosody_ready(), reason="needs Debian's prosody and lua5.4")
def test_prosody_module_installed_by_setup_is_loaded_and_answers(root: Path):
    server = ProsodyInstall(root)
    server.write_admin_config()
    r = run([*MDM_COMPONENT, *setup_args("prosody", root, server.component_port, server.cfg, [])])
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("mod_mdm_bridge.lua", *(f.name for f in bridge_dir("prosody").glob("*.lib.lua"))):
        module = server.modules / "mod_mdm_bridge" / name  # the module and its lib files (R9.11)
        assert module.is_file() and not module.is_symlink(), name
    assert (server.modules / "mod_mdm_bridge" / "README.md").is_file()
    snippet = (server.etc / "conf.d" / "mdm.cfg.lua").read_text()
    assert 'modules_enabled = { "mdm_bridge" }' in snippet and 'Component "mdm.localhost"' in snippet
    toml = root / "mdm" / "mdm-component.toml"
    free_metrics_port(toml)
    unit = root / "systemd" / "mdm-component.service"
    assert f"ExecStart={sys.executable} -m mdm.cli --config {toml}" in unit.read_text()
    if not missing_tools("systemd-analyze"):  # the unit as systemd reads it
        check = run(["systemd-analyze", "verify", str(unit)], timeout=60)
        assert check.returncode == 0 and not check.stderr.strip(), check.stderr
    # the guide's next step: Prosody's own check accepts what setup wrote
    check = server.prosodyctl("check", "config")
    assert check.returncode == 0 and "All checks passed" in check.stdout, check.stdout + check.stderr
    assert str(server.etc / "conf.d" / "mdm.cfg.lua") in check.stdout
    # the check is clean on the config it wrote: setup says the bridge and the component are there
    again = run([*MDM_COMPONENT, "setup", "prosody", "--config", str(server.cfg), "--component-config", str(toml)])
    assert again.returncode == 0, again.stdout + again.stderr
    assert '"mdm_bridge" is enabled for localhost and Component mdm.localhost exists' in again.stdout
    server.start()
    try:
        doctor = run([*MDM_COMPONENT, "doctor", "--config", str(toml), "--timeout", "15"])
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "the bridge on localhost answered" in doctor.stdout
        wait_log(server.log, "MDM component mdm.localhost connected")
    finally:
        server.stop()


@pytest.mark.skipif(not _prosody_ready(), reason="needs Debian's prosody and lua5.4")
def test_prosody_setup_refuses_modules_that_fight_and_finds_an_old_copy(tmp_path: Path):
    old = tmp_path / "old-checkout"
    (old / "mod_mdm_bridge").mkdir(parents=True)
    (old / "mod_mdm_bridge" / "mod_mdm_bridge.lua").write_text("-- an old bridge\n")
    cfg = tmp_path / "prosody.cfg.lua"
    cfg.write_text(f"""plugin_paths = {{ "{old}", "{tmp_path / 'modules'}" }}
modules_enabled = {{ "roster", "carbons", "csi_simple", "csi_battery_saver" }}
VirtualHost "example.org"
VirtualHost "chat.example.org"
    modules_enabled = {{ "roster", "muc_mam" }}
""")
    base = [*MDM_COMPONENT, "setup", "prosody", "--config", str(cfg), "--component-config", str(tmp_path / "c.toml"),
            "--modules-dir", str(tmp_path / "modules")]
    r = run([*base, "--host", "example.org"])
    assert r.returncode == 1
    assert 'error: "csi_battery_saver" is in modules_enabled: remove it' in r.stdout
    assert f"another mod_mdm_bridge on plugin_paths: {old / 'mod_mdm_bridge' / 'mod_mdm_bridge.lua'}" in r.stdout
    assert '"carbons" stays enabled' in r.stdout
    # --write refuses while there are errors: nothing is written
    w = run([*base, "--host", "example.org", "--write", "--unit-dir", ""])
    assert w.returncode == 1 and not (tmp_path / "modules").exists() and not (tmp_path / "c.toml").exists()
    # two hosts: which one must be said
    assert "pass --host" in run(base).stdout
    # a host with its own modules_enabled: re-opening it would replace that list, so setup asks
    # for one line by hand instead
    h = run([*base, "--host", "chat.example.org"])
    assert 'add "mdm_bridge" to the modules_enabled of VirtualHost "chat.example.org"' in h.stdout


def test_prosody_setup_on_a_missing_config_is_one_error(tmp_path: Path):
    r = run([*MDM_COMPONENT, "setup", "prosody", "--config", str(tmp_path / "nope.cfg.lua"),
             "--component-config", str(tmp_path / "c.toml")])
    assert r.returncode == 1 and "error:" in r.stdout and "Traceback" not in r.stderr


# --- ejabberd ----------------------------------------------------------------------------------

@needs_root
@pytest.mark.skipif(not _ejabberd_ready(), reason="needs Debian's ejabberd and erlang-dev")
def test_ejabberd_module_install_builds_enables_and_answers(root: Path):
    server = EjabberdInstall(root)
    server.write_admin_config()
    r = run([*MDM_COMPONENT, *setup_args("ejabberd", root, server.component_port, server.cfg,
                                         ["--contrib-dir", str(server.contrib)])])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ejabberdctl module_install mod_mdm_bridge" in r.stdout
    sources = server.contrib / "sources" / "mod_mdm_bridge"
    # README.txt for ejabberd up to 25.04, README.md from 25.07 (R9.12): one text, both names
    for f in ("mod_mdm_bridge.spec", "src/mod_mdm_bridge.erl", "src/mod_mdm_bridge_link.erl",
              "src/mod_mdm_bridge_plans.erl", "src/mod_mdm_bridge_bind2.erl",
              "conf/mod_mdm_bridge.yml", "README.txt", "README.md", "COPYING"):
        assert (sources / f).is_file(), f
    assert (sources / "conf" / "mod_mdm_bridge.yml").stat().st_uid == __import__("pwd").getpwnam("ejabberd").pw_uid
    toml = root / "mdm" / "mdm-component.toml"
    free_metrics_port(toml)
    server.start()
    try:
        assert "mod_mdm_bridge" in server.ctl("modules_available").stdout
        install = server.ctl("module_install", "mod_mdm_bridge")
        assert install.returncode == 0, install.stdout + install.stderr + server.log.read_text(errors="replace")
        assert "Module mod_mdm_bridge has been installed and started" in install.stdout
        for beam in ("mod_mdm_bridge", "mod_mdm_bridge_link", "mod_mdm_bridge_plans"):  # every part compiled
            assert (server.contrib / "mod_mdm_bridge" / "ebin" / f"{beam}.beam").is_file(), beam
        assert "mod_mdm_bridge" in server.ctl("modules_installed").stdout
        log = wait_log(server.log, "MDM bridge started on localhost")
        assert "is not loaded on localhost: mod_mdm_bridge needs it" not in log
        doctor = run([*MDM_COMPONENT, "doctor", "--config", str(toml), "--timeout", "15"])
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "the bridge on localhost answered" in doctor.stdout
        wait_log(server.log, "MDM component mdm.localhost connected")
        # the guide's update route: setup again (it says to upgrade), then module_upgrade
        again = run([*MDM_COMPONENT, *setup_args("ejabberd", root, server.component_port, server.cfg,
                                                 ["--contrib-dir", str(server.contrib)])])
        assert again.returncode == 0 and "ejabberdctl module_upgrade mod_mdm_bridge" in again.stdout, again.stdout
        upgrade = server.ctl("module_upgrade", "mod_mdm_bridge")
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        assert "mod_mdm_bridge" in server.ctl("modules_installed").stdout
        end = time.monotonic() + 30
        while server.log.read_text(errors="replace").count("MDM bridge started on localhost") < 2:
            assert time.monotonic() < end, "the bridge did not start again after module_upgrade"
            time.sleep(0.1)
        doctor = run([*MDM_COMPONENT, "doctor", "--config", str(toml), "--timeout", "15"])
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    finally:
        server.stop()


def test_ejabberd_setup_needs_the_stock_modules_and_one_place_for_the_bridge(tmp_path: Path):
    cfg = tmp_path / "ejabberd.yml"
    cfg.write_text("""hosts: ["example.org"]
listen:
  - port: 5347
    module: ejabberd_service
    hosts:
      "mdm.example.org":
        password: "from-ejabberd-yml"
modules:
  mod_carboncopy: {}
  mod_mdm_bridge: {}
""")
    r = run([*MDM_COMPONENT, "setup", "ejabberd", "--config", str(cfg), "--component-config", str(tmp_path / "c.toml"),
             "--contrib-dir", str(tmp_path / "contrib")])
    assert r.returncode == 1
    assert "error: mod_client_state is not under modules:" in r.stdout
    assert "warning: mod_mdm_bridge is configured in" in r.stdout
    assert "the listener for mdm.example.org is in" in r.stdout
    # the listener is in ejabberd.yml already: the module's conf does not open a second one
    assert "listen:" not in r.stdout.split("conf/mod_mdm_bridge.yml:")[1]


def test_setup_finds_secrets_that_differ(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text('[component]\njid = "mdm.example.org"\nsecret = "from-toml"\n')
    cfg = tmp_path / "prosody.cfg.lua"
    cfg.write_text('VirtualHost "example.org"\nComponent "mdm.example.org"\n    component_secret = "from-prosody"\n')
    r = run([*MDM_COMPONENT, "setup", "prosody", "--config", str(cfg), "--component-config", str(toml)])
    assert r.returncode == 1 and "component_secret of Component mdm.example.org differs" in r.stdout
    yml = tmp_path / "ejabberd.yml"
    yml.write_text('hosts: ["example.org"]\nlisten:\n  - port: 5347\n    module: ejabberd_service\n    hosts:\n'
                   '      "mdm.example.org":\n        password: "from-ejabberd"\n'
                   'modules:\n  mod_carboncopy: {}\n  mod_client_state: {}\n')
    r = run([*MDM_COMPONENT, "setup", "ejabberd", "--config", str(yml), "--component-config", str(toml),
             "--contrib-dir", str(tmp_path / "contrib")])
    assert r.returncode == 1 and "listener's password for mdm.example.org" in r.stdout


@pytest.mark.skipif(not _prosody_ready(), reason="needs Debian's prosody and lua5.4")
def test_setup_write_twice_keeps_the_secret_and_the_config(tmp_path: Path):
    (tmp_path / "conf.d").mkdir()
    cfg = tmp_path / "prosody.cfg.lua"
    cfg.write_text(f'plugin_paths = {{ "{tmp_path / "modules"}" }}\nmodules_enabled = {{ "roster", "carbons" }}\n'
                   'VirtualHost "example.org"\nInclude "conf.d/*.cfg.lua"\n')
    args = [*MDM_COMPONENT, *setup_args("prosody", tmp_path, 5347, cfg, [])]
    args[args.index("--host") + 1] = "example.org"
    first = run(args)
    assert first.returncode == 0, first.stdout + first.stderr
    snippet, toml = (tmp_path / "conf.d" / "mdm.cfg.lua").read_text(), (tmp_path / "mdm" / "mdm-component.toml")
    before = toml.read_text()
    second = run(args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"kept {toml}" in second.stdout and toml.read_text() == before
    assert (tmp_path / "conf.d" / "mdm.cfg.lua").read_text() == snippet
    assert '"mdm_bridge" is enabled for example.org and Component mdm.example.org exists' in second.stdout


def test_ejabberd_setup_write_twice_keeps_the_secret(tmp_path: Path):
    yml = tmp_path / "ejabberd.yml"
    yml.write_text('hosts: ["example.org"]\nmodules:\n  mod_carboncopy: {}\n  mod_client_state: {}\n')
    args = [*MDM_COMPONENT, *setup_args("ejabberd", tmp_path, 5347, yml, ["--contrib-dir", str(tmp_path / "contrib")])]
    args[args.index("--host") + 1] = "example.org"
    conf = tmp_path / "contrib" / "sources" / "mod_mdm_bridge" / "conf" / "mod_mdm_bridge.yml"
    assert run(args).returncode == 0
    first = conf.read_text()
    secret = load_config(tmp_path / "mdm" / "mdm-component.toml").secret
    assert f'password: "{secret}"' in first and '"mdm.example.org":' in first
    again = run(args)
    assert again.returncode == 0 and conf.read_text() == first
    assert "ejabberdctl module_install mod_mdm_bridge" in again.stdout


@needs_root
@pytest.mark.skipif(not _prosody_ready(), reason="needs Debian's prosody and lua5.4")
def test_prosody_bridge_says_at_load_what_is_misconfigured(root: Path):
    """The bridge enabled without its Component, beside a CSI module that fights with it: two
    errors in Prosody's log at start, not a bridge that silently never serves."""
    server = ProsodyInstall(root)
    server.write_admin_config(extra_modules=("csi_battery_saver",))
    r = run([*MDM_COMPONENT, *setup_args("prosody", root, server.component_port, server.cfg, [])])
    assert r.returncode == 1 and '"csi_battery_saver" is in modules_enabled' in r.stdout  # setup refuses
    # the admin writes the host part by hand and forgets the Component
    shutil.copytree(bridge_dir("prosody"), server.modules / "mod_mdm_bridge")
    snippet = server.etc / "conf.d" / "mdm.cfg.lua"
    snippet.write_text('VirtualHost "localhost"\n    modules_enabled = { "mdm_bridge" }\n')
    snippet.chmod(0o644)
    server.start(component=False)
    try:
        log = wait_log(server.log, 'No Component "mdm.localhost" in the config')
        log = wait_log(server.log, "mod_csi_battery_saver is enabled beside mod_mdm_bridge")
        assert "\terror\t" in log
    finally:
        server.stop()


@needs_root
@pytest.mark.skipif(not _ejabberd_ready(), reason="needs Debian's ejabberd and erlang-dev")
def test_ejabberd_bridge_says_at_start_when_no_listener_takes_its_component(root: Path):
    server = EjabberdInstall(root)
    server.write_admin_config()
    r = run([*MDM_COMPONENT, *setup_args("ejabberd", root, server.component_port, server.cfg,
                                         ["--contrib-dir", str(server.contrib)])])
    assert r.returncode == 0, r.stdout + r.stderr
    # the admin keeps the module and drops the listener
    conf = server.contrib / "sources" / "mod_mdm_bridge" / "conf" / "mod_mdm_bridge.yml"
    conf.write_text("modules:\n  mod_mdm_bridge: {}\n")
    HERE.chown(root, "ejabberd")
    server.start()
    try:
        install = server.ctl("module_install", "mod_mdm_bridge")
        assert install.returncode == 0, install.stdout + install.stderr
        log = wait_log(server.log, "No ejabberd_service listener for mdm.localhost on this node")
        assert "[error]" in log
    finally:
        server.stop()


def test_setup_says_what_it_leaves_as_it_is_on_each_prosody_release():
    """R9.12: what setup leaves to the admin where Prosody 0.12.3 and 13 differ, and why."""
    old = prosody_release_notes((0, 12, 3), {"carbons"}, {})
    assert [n.split(":")[0] for n in old] == ['no "cloud_notify" in modules_enabled']
    assert "from prosody-modules on Prosody 0.12" in old[0]
    new = prosody_release_notes((13, 0, 1), {"cloud_notify"}, {"run_as_root": "true"})
    assert new[0].startswith('"cloud_notify" (XEP-0357 push, a core module in Prosody 13) stays enabled')
    assert new[1].startswith("bounce_blocked_messages is not set: this Prosody drops")
    assert new[2].startswith("run_as_root = true: Prosody 13 starts as root only with it")
    mine = prosody_release_notes((13, 0, 1), set(), {"bounce_blocked_messages": "true"})
    assert "bounce_blocked_messages = true (yours, left as it is)" in mine[1]
