"""Issue 12: a fresh-machine install, from a wheel built from the checkout.

The wheel goes into a fresh virtualenv (the system's Python, no extras): only what the package
ships is used from there on. On each server, the steps of docs/install-prosody.md and
docs/install-ejabberd.md: ``mdm-component setup … --write`` from that virtualenv (paths pointed
into a temp dir instead of /etc and /var/lib), the server run as its own user (Prosody as
``prosody``; ejabberd by ``ejabberdctl`` as ``ejabberd``, the module built by ``ejabberdctl
module_install``), the component started from the virtualenv with the config setup wrote, and
then the R10 flow walkthrough (conformance/R10-flow-walkthrough.scs) played by the harness's
clients against that installation. Nothing written for the servers or the component points into
the source checkout.

R9.12: the same steps run on this machine (Debian 12: Prosody 0.12, ejabberd 23.01, Python 3.11)
and in a Debian 13 container (docker/install-test/Dockerfile: Debian's Prosody 13, ejabberd 24.12
on Erlang/OTP 27 and Python 3.13, nothing of ours), where the wheel goes into a virtualenv of the
container's Python (its dependencies from the wheelhouse the docker backend fetches for 3.13); the
servers and the component run there, the walkthrough's clients here, over loopback (serverinstall.py:
``HERE`` / ``InContainer``). The component's unit tests also run from the wheel on 3.12 and 3.13.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mdm_harness.servers import docker as mdm_docker
from mdm_harness.servers.kinds import RELEASES

from .docker_engine import docker_engine  # noqa: F401 (the fixture)
from .serverinstall import (
    HERE,
    ComponentProcess,
    EjabberdInstall,
    Here,
    InContainer,
    ProsodyInstall,
    free_metrics_port,
    have_user,
    missing_tools,
    run,
    scenario_accounts,
    setup_args,
    wait_log,
    walkthrough,
    world_dir,
)

CHECKOUT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs the servers as their own users (needs root)")


@dataclass
class Installed:
    """The wheel installed on one machine: where the steps run, the virtualenv, its mdm-component."""
    on: Here
    venv: Path
    exe: str

    @property
    def wheel(self) -> Path:
        return next(self.venv.parent.glob("open_mdm-*.whl"))


def _install(on: Here, python: str, wheel: Path, *pip: str) -> Installed:
    """Step 1 of the install guides: a virtualenv of ``python`` beside the wheel, and the wheel in it."""
    venv = wheel.parent / "venv"
    r = on.run([python, "-m", "venv", str(venv)])
    assert r.returncode == 0, r.stdout + r.stderr
    r = on.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *pip, str(wheel)],
               timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return Installed(on, venv, str(venv / "bin" / "mdm-component"))


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """The wheel built from a copy of the checkout's files, installed here."""
    base = world_dir("mdm-wheel-")
    try:
        src = base / "src"
        src.mkdir()
        files = subprocess.run(["git", "-C", str(CHECKOUT), "ls-files", "-co", "--exclude-standard", "-z"],
                               capture_output=True, check=True).stdout
        subprocess.run(["tar", "-C", str(CHECKOUT), "--null", "-T", "-", "-cf", str(base / "src.tar")],
                       input=files, check=True, capture_output=True)
        subprocess.run(["tar", "-C", str(src), "-xf", str(base / "src.tar")], check=True)
        r = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                 "-w", str(base), str(src)], timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        shutil.rmtree(src)
        # the distribution's Python (Debian 12: 3.11), as an admin would use it
        python = next((p for p in ("/usr/bin/python3", shutil.which("python3")) if p and os.path.exists(p)),
                      sys.executable)
        yield _install(HERE, python, next(base.glob("open_mdm-*.whl")))
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", params=["here", "deb13"])
def machine(request, installed: Installed) -> Iterator[Installed]:
    """This machine's virtualenv (the ``installed`` fixture), or (R9.12) the wheel installed the
    same way in a Debian 13 container: a virtualenv of Debian's Python 3.13 there, the wheel's
    dependencies from the wheelhouse the docker backend fetches for 3.13."""
    if request.param == "here":
        yield installed
        return
    request.getfixturevalue("docker_engine")  # started for the session, stopped by pid at its end
    release = request.param
    on = InContainer(release)
    base = world_dir(f"mdm-wheel-{release}-")
    try:
        wheel = Path(shutil.copy(installed.wheel, base))
        with mdm_docker.serve_wheelhouse(release) as url:
            there = _install(on, "python3", wheel, "--no-index", "--find-links", url)
        version = on.run([str(there.venv / "bin" / "python"), "-c", "import sys; print(sys.version)"]).stdout
        assert version.startswith(RELEASES[release].python + "."), version
        yield there
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _no_checkout_paths(*paths: Path) -> None:
    for p in paths:
        for f in ([p] if p.is_file() else [x for x in p.rglob("*") if x.is_file()]):
            assert not f.is_symlink(), f
            assert str(CHECKOUT) not in f.read_text(errors="replace"), f"{f} points into the checkout"


def test_the_wheel_installs_the_component_alone(machine: Installed):
    on, venv, exe = machine.on, machine.venv, machine.exe
    r = on.run([exe, "--version"])
    assert r.returncode == 0 and r.stdout.strip() == "mdm-component 0.1.0"
    files = on.run([exe, "files"]).stdout
    assert str(CHECKOUT) not in files and str(venv) in files
    for line in files.splitlines():
        assert Path(line.split(": ", 1)[1]).exists(), line
    # the component alone: no harness, no PostgreSQL driver, no test tools
    py = str(venv / "bin" / "python")
    for module in ("aioxmpp", "asyncpg", "pytest"):
        assert on.run([py, "-c", f"import {module}"]).returncode != 0, f"{module} was installed with the component"
    hint = on.run([str(venv / "bin" / "mdm-harness"), "--help"])
    assert hint.returncode == 2 and "pip install 'open-mdm[harness]'" in hint.stderr
    assert "``" not in on.run([exe, "--help"]).stdout


# Debian's default configs, as setup reads them on each release (R9.12)
SETUP_SAYS = {
    "deb12": {"prosody": ["ok: Prosody 0.12.3", 'no "cloud_notify" in modules_enabled'],
              "ejabberd": ["ok: ejabberd 23.01", "ok: Erlang/OTP 25"]},
    "deb13": {"prosody": ["ok: Prosody 13.0.1",
                          '"cloud_notify" (XEP-0357 push, a core module in Prosody 13) stays enabled',
                          "bounce_blocked_messages is not set: this Prosody drops"],
              "ejabberd": ["ok: ejabberd 24.12", "ok: Erlang/OTP 27"]},
}


def _servers_here(*tools: str, user: str, on: Here) -> None:
    """This machine's servers are Debian's packages, if installed (the container has them)."""
    if on is HERE and (missing_tools(*tools) or not have_user(user)):
        pytest.skip(f"needs Debian's {user} here")


@pytest.mark.asyncio
async def test_fresh_install_on_prosody_passes_the_flow_walkthrough(machine: Installed):
    on, exe = machine.on, machine.exe
    _servers_here("prosody", "prosodyctl", "lua5.4", user="prosody", on=on)
    root = world_dir("mdm-fresh-prosody-")
    server = ProsodyInstall(root, on)
    component = None
    try:
        server.write_admin_config()
        r = on.run([exe, *setup_args("prosody", root, server.component_port, server.cfg, [])])
        assert r.returncode == 0, r.stdout + r.stderr
        # what setup leaves as it is on each release, and says so (R9.12)
        for line in SETUP_SAYS[on.release]["prosody"]:
            assert line in r.stdout, r.stdout
        # the guide's step 3, on each release
        check = server.prosodyctl("check", "config")
        assert check.returncode == 0 and "All checks passed" in check.stdout, check.stdout + check.stderr
        toml = root / "mdm" / "mdm-component.toml"
        free_metrics_port(toml)
        _no_checkout_paths(server.etc, server.modules, toml, root / "systemd")
        assert f"ExecStart={exe} --config {toml}" in (root / "systemd" / "mdm-component.service").read_text()
        server.register(scenario_accounts())
        server.start()
        component = ComponentProcess(exe, toml, root / "mdm-component.log", on)
        await component.start()
        log = wait_log(server.log, "MDM component mdm.localhost connected; reported the sessions of localhost")
        doctor = on.run([exe, "doctor", "--config", str(toml)])
        assert doctor.returncode == 0 and "connected and serving" in doctor.stdout, doctor.stdout
        await walkthrough(server.handle(toml), component)
        log = server.log.read_text(errors="replace")
        assert "\terror\t" not in log, log
        print("prosody warnings:", *[line for line in log.splitlines() if "\twarn\t" in line], sep="\n")
    finally:
        if component is not None:
            await component.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.asyncio
async def test_fresh_install_on_ejabberd_passes_the_flow_walkthrough(machine: Installed):
    on, exe = machine.on, machine.exe
    _servers_here("ejabberdctl", "erlc", "epmd", user="ejabberd", on=on)
    root = world_dir("mdm-fresh-ejabberd-")
    server = EjabberdInstall(root, on)
    component = None
    try:
        server.write_admin_config()
        r = on.run([exe, *setup_args("ejabberd", root, server.component_port, server.cfg,
                                  ["--contrib-dir", str(server.contrib)])])
        assert r.returncode == 0, r.stdout + r.stderr
        for line in SETUP_SAYS[on.release]["ejabberd"]:
            assert line in r.stdout, r.stdout
        toml = root / "mdm" / "mdm-component.toml"
        free_metrics_port(toml)
        _no_checkout_paths(server.contrib, toml, root / "systemd")
        server.start()
        install = server.ctl("module_install", "mod_mdm_bridge")
        assert install.returncode == 0, install.stdout + install.stderr
        wait_log(server.log, "MDM bridge started on localhost")
        server.register(scenario_accounts())
        component = ComponentProcess(exe, toml, root / "mdm-component.log", on)
        await component.start()
        wait_log(server.log, "MDM component mdm.localhost connected")
        doctor = on.run([exe, "doctor", "--config", str(toml)])
        assert doctor.returncode == 0 and "connected and serving" in doctor.stdout, doctor.stdout
        await walkthrough(server.handle(toml), component)
        log = server.log.read_text(errors="replace")
        assert "[error]" not in log, log
        print("ejabberd warnings:", *[line for line in log.splitlines() if "[warning]" in line], sep="\n")
    finally:
        if component is not None:
            await component.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# The component's own unit tests (no harness, no servers) under each other declared Python found.
COMPONENT_UNIT_TESTS = ["test_bridge_protocol.py", "test_capacity.py", "test_core.py", "test_core_real_phones.py",
                        "test_limits.py", "test_silent_mode.py", "test_stream.py"]


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_the_wheel_on_another_python(installed, version: str):
    """R9.12: the component on each Python the servers' Debian releases carry (3.11 is this
    machine's, above; 3.13 is Debian 13's) and 3.12 between, from pyenv here (a pyenv shim on PATH
    fails for a version that is not selected: the installed versions are looked up directly)."""
    found = [shutil.which(f"python{version}"),
             *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))]
    python = next((p for p in found if p and run([p, "-c", "import sys"]).returncode == 0), None)
    if python is None:
        pytest.skip(f"no Python {version} here")
    print(f"Python {version}: {python}")
    base = world_dir(f"mdm-py{version}-")
    try:
        venv = _install(HERE, python, Path(shutil.copy(installed.wheel, base)), "pytest==9.2.0",
                        "pytest-asyncio==1.5.0").venv
        assert run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.version)"]).stdout.startswith(
            version + ".")
        assert run([str(venv / "bin" / "mdm-component"), "--version"]).stdout.startswith("mdm-component ")
        # from the checkout's tests, the installed package (not the checkout's plugin/): --noconftest,
        # the shared conftest needs the harness
        r = run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest",
                 *[f"tests/{t}" for t in COMPONENT_UNIT_TESTS]], cwd=str(CHECKOUT), timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        assert str(venv) in run([str(venv / "bin" / "python"), "-c", "import mdm; print(mdm.__file__)"]).stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)
