"""The images and the compose files checked statically, against the same config loader and the
same Lua syntax checker the live setup uses (quick, no engine). They are built and run for real
by tests/test_docker_compose.py and the docker-* harness backends."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mdm.config import load

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("dockerfile", sorted(DOCKER.glob("*/Dockerfile")), ids=lambda p: p.parent.name)
def test_dockerfile_copies_what_exists_and_has_an_exec_entrypoint(dockerfile):
    steps = instructions(dockerfile)
    # R9.12: the base is a build argument, Debian 13 by default (the harness builds both releases)
    assert steps[:2] == [("ARG", "BASE=debian:trixie-slim"), ("FROM", "${BASE}")], steps[:2]
    for op, arg in steps:
        if op == "COPY":
            *sources, _dest = arg.split()
            for src in sources:
                # a pattern (the bridges' parts and lib files) must match at least one file
                found = any(ROOT.glob(src)) if "*" in src else (ROOT / src).exists()
                assert found, f"{dockerfile}: COPY {src} does not exist (context: repo root)"
    (entry,) = [arg for op, arg in steps if op == "ENTRYPOINT"]
    assert isinstance(json.loads(entry), list)


def check_compose(name: str) -> dict:
    compose = yaml.safe_load((DOCKER / name).read_text())
    services = compose["services"]
    for service, svc in services.items():
        context = (DOCKER / svc["build"]["context"]).resolve()
        assert context == ROOT.resolve(), service
        assert (context / svc["build"]["dockerfile"]).is_file(), service
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):  # a bind mount of a file of ours
                assert (DOCKER / source).is_file(), volume
            else:
                assert source in compose["volumes"], volume
    return services


def test_compose_services_build_from_existing_files_and_agree_on_the_component():
    services = check_compose("compose.prosody.yml")
    cfg = load(DOCKER / "mdm-component.toml")
    assert cfg.server_host in services  # reached by service name
    prosody_cfg = (DOCKER / "prosody" / "prosody.cfg.lua").read_text()
    assert f'Component "{cfg.jid}"' in prosody_cfg
    assert f'component_secret = "{cfg.secret}"' in prosody_cfg
    assert f'mdm_component = "{cfg.jid}"' in prosody_cfg
    assert cfg.server_port == 5347 and "component_ports" not in prosody_cfg  # Prosody's default
    assert cfg.store_path.startswith("/var/lib/mdm-component/")  # the volume


def test_prosody_config_is_valid_lua_and_keeps_stock_carbons_and_csi_for_fail_open():
    cfg = DOCKER / "prosody" / "prosody.cfg.lua"
    luac = shutil.which("luac5.4") or shutil.which("luac")
    assert luac, "lua5.4 is installed by scripts/install"
    r = subprocess.run([luac, "-p", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    modules = re.search(r"modules_enabled = \{(.*?)\n\}", cfg.read_text(), re.S).group(1)
    code = "\n".join(line for line in modules.splitlines() if not line.strip().startswith("--"))
    names = set(re.findall(r'"([^"]+)"', code))
    assert {"mdm_bridge", "carbons", "csi_simple"} <= names, names  # R9.10: stock when the component is down


@pytest.mark.parametrize("source", sorted((ROOT / "plugin" / "prosody").glob("*.lua")), ids=lambda p: p.name)
def test_prosody_bridge_is_valid_lua(source):
    """The module and its lib files (module:require, R9.11), one file per luac run."""
    luac = shutil.which("luac5.4") or shutil.which("luac")
    assert luac, "lua5.4 is installed by scripts/install"
    r = subprocess.run([luac, "-p", str(source)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def ejabberd_config() -> dict:
    return yaml.safe_load((DOCKER / "ejabberd" / "ejabberd.yml").read_text())


def test_ejabberd_compose_and_configs_agree_on_the_component():
    services = check_compose("compose.ejabberd.yml")
    (mount,) = [v for v in services["mdm-component"]["volumes"] if v.startswith(".")]
    source, target, _mode = mount.split(":")
    assert target == "/etc/mdm/mdm-component.toml"  # the path the component image runs with
    cfg = load(DOCKER / source)
    assert cfg.server_host in services
    ej = ejabberd_config()
    (service,) = [lst for lst in ej["listen"] if lst["module"] == "ejabberd_service"]
    assert service["port"] == cfg.server_port
    assert service["hosts"][cfg.jid]["password"] == cfg.secret
    assert ej["modules"]["mod_mdm_bridge"]["component"] == cfg.jid
    assert set(cfg.hosts) <= set(ej["hosts"])
    # the bridge requires them (R9.10: stock delivery while the component is down)
    assert "mod_carboncopy" in ej["modules"] and "mod_client_state" in ej["modules"]


def test_ejabberd_image_puts_the_built_bridge_on_the_code_path():
    steps = instructions(DOCKER / "ejabberd" / "Dockerfile")
    assert ("RUN", "/opt/open-mdm/scripts/build-ejabberd-bridge") in steps
    ctl = (DOCKER / "ejabberd" / "ejabberdctl.cfg").read_text()
    assert '-pa /opt/open-mdm/build/erlang/ebin' in ctl  # where the build script writes, beside its scripts/


@pytest.mark.asyncio
async def test_ejabberd_image_config_loads_in_a_real_ejabberd(tmp_path):
    """The image's ejabberd.yml, on free loopback ports, in Debian's ejabberd with our bridge."""
    from mdm_harness.ports import free_ports
    from mdm_harness.servers.base import ServerHandle, wait_listening
    from mdm_harness.servers.ejabberd import bridge_ebin, launch, wait_started

    ej = ejabberd_config()
    ports = free_ports(len(ej["listen"]))
    for listener, port in zip(ej["listen"], ports, strict=True):
        listener["port"], listener["ip"] = port, "127.0.0.1"
    cfg = tmp_path / "ejabberd.yml"
    cfg.write_text(yaml.safe_dump(ej))
    proc = await launch(cfg, tmp_path, bridge_ebin())
    handle = ServerHandle("ejabberd", "example.org", ports[0], ports[1], "", "", "", tmp_path, proc.pid)
    try:
        await wait_started(proc, tmp_path / "ejabberd.log")
        for port in ports:
            await wait_listening(port, proc, "ejabberd", tmp_path / "ejabberd.log", timeout=60)
    finally:
        await handle.stop()
    log = (tmp_path / "ejabberd.log").read_text()
    started = log[:log.index(" is started in the node ")]
    assert re.search(r"MDM bridge started on example\.org .*for component mdm\.example\.org", started), started[-3000:]
    assert "[error]" not in started and "[critical]" not in started, started[-3000:]


def test_issue16_docker_backends_run_the_component_in_its_container(tmp_path):
    """Scenario runs on docker-* drive the component image's container (signals, admin API), not
    a component in the harness's process; the native backends keep the in-process one."""
    from mdm_harness.component_control import ComponentControl
    from mdm_harness.component_remote import RemoteComponentControl, control_for
    from mdm_harness.servers import ServerHandle
    from mdm_harness.servers.docker import DockerComponent

    def handle(kind: str) -> ServerHandle:
        return ServerHandle(kind, "localhost", 5222, 5347, "mdm.localhost", "s", "conference.localhost", tmp_path)
    docker = control_for(handle("docker-prosody"))
    assert isinstance(docker, RemoteComponentControl)
    process = docker._make("[component]\n", 9999)
    assert isinstance(process, DockerComponent) and process.config_path.parent == tmp_path / "component"
    assert isinstance(control_for(handle("prosody")), ComponentControl)
    assert type(control_for(handle("prosody"), own_process=True)._make("", 1)) is not DockerComponent
