"""The images built from Debian's packages, and the shipped compose stacks run for real: Debian's
docker-compose brings one up (the server and the component image, each in its container, on
compose's own network), the R10 flow walkthrough is played against it by real clients, and the
stack is taken down with its volumes.

The stack is the shipped one with two changes a test on loopback needs, made in an override
file: the domain is ``localhost`` (the scenario's JIDs) instead of ``example.org``, and Prosody
neither offers nor requires TLS on c2s (the image has no certificate). The component container is driven
as the walkthrough asks: ``Component sets mdm.active_window = 1`` rewrites its config file and
sends it SIGHUP (R1.2), then waits for the component to log the reload."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import pytest

from mdm_harness.runner import ScenarioRun, accounts_of
from mdm_harness.scenario import load_scenarios
from mdm_harness.servers import ServerHandle
from mdm_harness.servers import docker as mdm_docker
from mdm_harness.servers.kinds import DEFAULT_RELEASE, RELEASES

from .docker_engine import ROOT, compose, docker_engine  # noqa: F401 (the fixture)

DOCKER = ROOT / "docker"
FLOW = ROOT / "conformance" / "R10-flow-walkthrough.scs"
SECRET = "change-me"  # the shipped configs' component secret


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_R9_12_images_build_from_debian_packages(docker_engine, release):  # noqa: F811
    """No registry: the base is Debian's packages imported as debian:<codename>-slim; the component
    runs on that release's python3 (3.11 on Debian 12, 3.13 on Debian 13), its servers are the
    versions servers/kinds.py says (checked in the container when the backend starts one)."""
    rel = RELEASES[release]
    started = time.monotonic()
    times = mdm_docker.build_images(release=release)
    print(f"{release} images: {', '.join(f'{k} {v:.1f}s' for k, v in times.items())}; "
          f"total {time.monotonic() - started:.1f}s")
    client = docker_engine.client
    base = client.images.get(rel.base_image)
    for name in ("prosody", "ejabberd", "component"):
        image = client.images.get(mdm_docker.image_tag(name, release))
        assert base.id in [layer for layer in _ancestors(client, image.id)], name
    out = client.containers.run(mdm_docker.image_tag("component", release), entrypoint=["sh", "-c"], remove=True,
                                network_mode="host",
                                command=["readlink -f $(command -v python3) && python3 --version && "
                                         "mdm-component --config /etc/mdm/mdm-component.toml --check"],
                                labels={mdm_docker.LABEL: "test"}).decode()
    assert "/opt/mdm/bin/python3" in out or f"/usr/bin/python{rel.python}" in out, out
    assert f"Python {rel.python}." in out and "OK" in out, out
    if release == DEFAULT_RELEASE:  # what compose and `docker build` without arguments run
        assert client.images.get("open-mdm/component").id == client.images.get(
            mdm_docker.image_tag("component", release)).id


def _ancestors(client, image_id: str) -> list[str]:
    return [h["Id"] for h in client.api.history(image_id) if h["Id"] != "<missing>"]


class ComponentContainer:
    """What ScenarioRun asks of the component, for the compose stack's component container."""

    def __init__(self, engine, project: str, config: Path) -> None:
        self.engine = engine
        self.project = project
        self.config_file = config
        self.component = None  # not in this process

    def container(self):
        (c,) = self.engine.client.containers.list(filters={
            "label": [f"com.docker.compose.project={self.project}", "com.docker.compose.service=mdm-component"]})
        return c

    def wait_logged(self, pattern: str, count: int = 1, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            logs = self.container().logs().decode(errors="replace")
            if len(re.findall(pattern, logs)) >= count:
                return logs
            if time.monotonic() > deadline:
                raise AssertionError(f"the component did not log {pattern!r} within {timeout}s:\n{logs[-3000:]}")
            time.sleep(0.1)

    async def set(self, assignment: str) -> None:
        await asyncio.to_thread(self._set, assignment)

    def _set(self, assignment: str) -> None:
        """``mdm.active_window = 1``: the config file changed, SIGHUP, the reload logged."""
        key, _, value = (p.strip() for p in assignment.partition("="))
        section, _, name = key.partition(".")
        assert section == "mdm", assignment
        text = self.config_file.read_text()
        text, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, count=1, flags=re.M)
        if n == 0:
            text = text.replace("[mdm]\n", f"[mdm]\n{name} = {value}\n", 1)
        self.config_file.write_text(text)
        before = len(re.findall(r"reconfigured:", self.container().logs().decode(errors="replace")))
        self.container().kill(signal="SIGHUP")
        self.wait_logged(rf"reconfigured:.*{name}={value}", count=1, timeout=10)
        self.wait_logged(r"reconfigured:", count=before + 1, timeout=10)

    async def serving(self) -> bool:
        return True  # up for the whole walkthrough (compose brought it up)

    async def _unsupported(self, *args):
        raise AssertionError("the compose round trip does not stop, crash, pause or inspect the component")

    stop = start = crash = pause = resume = session = push_registered = sees_inactive = _unsupported


def _stack_files(server: str, tmp: Path) -> list[Path]:
    """The shipped compose file, and an override: domain localhost, plaintext c2s on loopback."""
    component = (DOCKER / ("mdm-component.toml" if server == "prosody" else "mdm-component.ejabberd.toml"))
    (tmp / "mdm-component.toml").write_text(component.read_text().replace("example.org", "localhost"))
    if server == "prosody":
        shipped = (DOCKER / "prosody" / "prosody.cfg.lua").read_text()
        (tmp / "server.cfg").write_text("-- the test's: logins without TLS (no certificate in the image)\n"
                                        'c2s_require_encryption = false\nmodules_disabled = { "tls" }\n'
                                        + shipped.replace("example.org", "localhost"))
        target = "/etc/prosody/prosody.cfg.lua"
    else:
        shipped = (DOCKER / "ejabberd" / "ejabberd.yml").read_text()
        (tmp / "server.cfg").write_text(shipped.replace("example.org", "localhost"))
        target = "/etc/ejabberd/ejabberd.yml"
    for f in tmp.iterdir():
        f.chmod(0o644)  # read by the images' unprivileged users
    override = tmp / "compose.test.yml"
    override.write_text(f"""services:
  {server}:
    volumes:
      - {tmp / "server.cfg"}:{target}:ro
  mdm-component:
    volumes:
      - {tmp / "mdm-component.toml"}:/etc/mdm/mdm-component.toml:ro
""")
    return [DOCKER / f"compose.{server}.yml", override]


@pytest.mark.asyncio
@pytest.mark.parametrize("server", ["prosody", "ejabberd"])
async def test_compose_stack_plays_the_flow_walkthrough(server, docker_engine, tmp_path):  # noqa: F811
    mdm_docker.build_images((server, "component"))  # compose finds them under their image: tags
    tmp_path.chmod(0o755)
    files = _stack_files(server, tmp_path)
    project = f"mdm-test-{server}-{tmp_path.name}".lower().replace("_", "-")
    (scenario,) = load_scenarios([FLOW])
    scenario = scenario.for_server(f"docker-{server}-{DEFAULT_RELEASE}")  # what compose builds: Debian 13
    started = time.monotonic()
    compose(docker_engine, project, files, "up", "-d", "--no-build")
    try:
        component = ComponentContainer(docker_engine, project, tmp_path / "mdm-component.toml")
        for a in accounts_of([scenario]):
            register = (["prosodyctl", "register", a.user, "localhost", a.password] if server == "prosody"
                        else ["ejabberdctl", "register", a.user, "localhost", a.password])
            _retry(lambda cmd=register: compose(docker_engine, project, files, "exec", "-T", server, *cmd))
        component.wait_logged(r"connected to \S+ as mdm\.localhost")
        up = time.monotonic() - started
        handle = ServerHandle(server, "localhost", 5222, 5347, "mdm.localhost", SECRET, "conference.localhost",
                              tmp_path)
        lines: list[str] = []
        steps = await ScenarioRun(scenario, handle, component, lines.append, False).run()  # type: ignore[arg-type]
        assert steps == len(scenario.steps)
        print(f"compose {server}: up and synced in {up:.1f}s, walkthrough {time.monotonic() - started - up:.1f}s")
    finally:
        logs = compose(docker_engine, project, files, "logs", "--no-color", check=False)
        down = compose(docker_engine, project, files, "down", "--volumes", "--timeout", "10", check=False)
        print(logs.stdout[-2000:])
    assert down.returncode == 0, down.stderr
    left = docker_engine.client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    assert not left, left


def _retry(action, attempts: int = 30):
    """ejabberdctl needs the node up (compose's depends_on does not wait for it)."""
    for i in range(attempts):
        try:
            return action()
        except (AssertionError, subprocess.TimeoutExpired):
            if i == attempts - 1:
                raise
            time.sleep(1)
