"""No Docker engine runs here: the images and the compose file are checked statically, against
the same config loader and the same Lua syntax checker the live setup uses."""

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
    assert steps[0][0] == "FROM"
    for op, arg in steps:
        if op == "COPY":
            *sources, _dest = arg.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{dockerfile}: COPY {src} does not exist (context: repo root)"
    (entry,) = [arg for op, arg in steps if op == "ENTRYPOINT"]
    assert isinstance(json.loads(entry), list)


def test_compose_services_build_from_existing_files_and_agree_on_the_component():
    compose = yaml.safe_load((DOCKER / "compose.prosody.yml").read_text())
    services = compose["services"]
    for name, svc in services.items():
        context = (DOCKER / svc["build"]["context"]).resolve()
        assert context == ROOT.resolve(), name
        assert (context / svc["build"]["dockerfile"]).is_file(), name
    for volume in (v.split(":")[0] for s in services.values() for v in s.get("volumes", [])):
        assert volume in compose["volumes"]

    cfg = load(DOCKER / "mdm-component.toml")
    assert cfg.server_host in services  # reached by service name
    prosody_cfg = (DOCKER / "prosody" / "prosody.cfg.lua").read_text()
    assert f'Component "{cfg.jid}"' in prosody_cfg
    assert f'component_secret = "{cfg.secret}"' in prosody_cfg
    assert f'mdm_component = "{cfg.jid}"' in prosody_cfg
    assert cfg.server_port == 5347 and "component_ports" not in prosody_cfg  # Prosody's default
    assert cfg.store_path.startswith("/var/lib/mdm-component/")  # the volume


def test_prosody_config_is_valid_lua_and_replaces_carbons_and_csi_queueing():
    cfg = DOCKER / "prosody" / "prosody.cfg.lua"
    luac = shutil.which("luac5.4") or shutil.which("luac")
    assert luac, "lua5.4 is installed by scripts/install"
    r = subprocess.run([luac, "-p", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    modules = re.search(r"modules_enabled = \{(.*?)\n\}", cfg.read_text(), re.S).group(1)
    code = "\n".join(line for line in modules.splitlines() if not line.strip().startswith("--"))
    names = set(re.findall(r'"([^"]+)"', code))
    assert "mdm_bridge" in names and "carbons" not in names and "csi_simple" not in names, names


def test_prosody_bridge_is_valid_lua():
    luac = shutil.which("luac5.4") or shutil.which("luac")
    assert luac, "lua5.4 is installed by scripts/install"
    r = subprocess.run([luac, "-p", str(ROOT / "plugin" / "prosody" / "mod_mdm_bridge.lua")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
