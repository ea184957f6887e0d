"""Servers configured the way docs/install-prosody.md and docs/install-ejabberd.md say, for the
install tests (issue 12): an admin's config modelled on Debian's, ``mdm-component setup … --write``
with the paths pointed into a temp dir, the servers run as their own users (``prosody``,
``ejabberd``, as Debian's packages run them), and the component as its own process. Everything
listens on free loopback ports and is stopped by pid; nothing stays behind.

``ComponentProcess`` stands in for the harness's in-process component, so a conformance scenario
runs against a server and an ``mdm-component`` process configured like a real install:
``Component sets mdm.x = v`` edits the component's TOML and sends SIGHUP (R1.2).

Where the steps run (R9.12): ``HERE`` is this machine (Debian 12 today, its packages, users and
Python); ``InContainer`` runs the very same steps in a container of another Debian release
(docker/install-test/Dockerfile: Debian's prosody, ejabberd, erlang-dev and python3, nothing of
ours) on the host's network, with the temp dir bind-mounted at the same path: commands and server
processes run there (as the servers' users there, stopped by their pids there), while files are
written and read here and the walkthrough's clients connect over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Protocol

import yaml

from mdm.config import Config
from mdm.config import load as load_config
from mdm_harness.ports import free_ports
from mdm_harness.runner import ScenarioRun, accounts_of
from mdm_harness.scenario import load_scenarios
from mdm_harness.servers import docker as mdm_docker
from mdm_harness.servers.base import Account, ServerHandle
from mdm_harness.servers.kinds import RELEASES

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance"

# Debian's default modules_enabled, per release (R9.12): Debian 12's prosody 0.12.3 and Debian 13's
# 13.0.1, which adds "account_activity" and "cloud_notify" (XEP-0357 push, a core module since
# Prosody 13: the bridge's push veto, R3.6, has it without prosody-modules). "posix" included: the
# server runs as the prosody user, as Debian runs it, so posix does not close the listeners (and
# Prosody 13 needs no run_as_root). Without "tls": the test clients log in plaintext on loopback and
# there is no certificate for the test host.
_DEBIAN_PROSODY_MODULES = ("disco", "roster", "saslauth", "blocklist", "bookmarks", "carbons", "dialback", "limits",
                           "pep", "private", "smacks", "vcard4", "vcard_legacy")
_DEBIAN_PROSODY_MODULES_TAIL = ("csi_simple", "invites", "invites_adhoc", "invites_register", "ping", "register",
                                "time", "uptime", "version", "admin_adhoc", "admin_shell", "posix")
DEBIAN_PROSODY_MODULES = {
    "deb12": (*_DEBIAN_PROSODY_MODULES, *_DEBIAN_PROSODY_MODULES_TAIL),
    "deb13": (*_DEBIAN_PROSODY_MODULES, "account_activity", "cloud_notify", *_DEBIAN_PROSODY_MODULES_TAIL),
}


def missing_tools(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def have_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def world_dir(prefix: str) -> Path:
    """A temp dir the servers' users can traverse (mkdtemp makes it 0700)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 180), **kw)


class Process(Protocol):
    """A started server or component: ``subprocess.Popen`` here, ``ContainerProcess`` there."""

    def poll(self) -> int | None: ...

    def send_signal(self, sig: signal.Signals) -> None: ...


class Here:
    """The install steps on this machine, as its root: commands as the servers' users, processes
    started as our children and stopped by pid."""

    def __init__(self, release: str = "") -> None:
        """``release``: deb12 / deb13 (servers/kinds.py), which Debian's defaults apply; this
        machine's by default (/etc/os-release)."""
        if not release:
            m = re.search(r"^VERSION_CODENAME=(\S+)", Path("/etc/os-release").read_text(), re.M)
            codename = m.group(1).strip('"') if m else ""
            release = next((r.name for r in RELEASES.values() if r.codename == codename), "deb12")
        self.release = release

    @staticmethod
    def _as(user: str | None, env: dict[str, str] | None) -> dict[str, object]:
        kw: dict[str, object] = {"user": user, "group": user, "extra_groups": []} if user else {}
        if env is not None:
            kw["env"] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        return kw

    def run(self, cmd: list[str], *, user: str | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return run(cmd, cwd=cwd, timeout=timeout, **self._as(user, env))

    def spawn(self, cmd: list[str], output: Path, *, user: str | None = None, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Process:
        """``cmd`` in the background, its output appended to ``output``."""
        with open(output, "ab") as out:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=cwd, **self._as(user, env))  # type: ignore[call-overload]

    def stop(self, proc: Process | None) -> None:
        stop(proc)  # type: ignore[arg-type]

    def kill(self, pid: int) -> None:
        kill_pid(pid)

    def chown(self, path: Path, owner: str, recursive: bool = True) -> None:
        """``owner``: ``user`` or ``user:group``."""
        user, _, group = owner.partition(":")
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group).gr_gid if group else pwd.getpwnam(user).pw_gid
        os.chown(path, uid, gid)
        for root, dirs, files in os.walk(path) if recursive else ():
            for name in (*dirs, *files):
                os.chown(os.path.join(root, name), uid, gid)

    def read(self, path: str) -> str:
        return Path(path).read_text()


HERE = Here()


class InContainer(Here):
    """The same steps in the container of docker/install-test/Dockerfile built on a Debian release
    (R9.12): commands by ``docker exec`` as root, as a server's user through ``setpriv``, background
    processes known by their pids there; paths under the bind-mounted temp dir are the same on
    both sides."""

    def __init__(self, release: str) -> None:
        super().__init__(release)
        self.container = mdm_docker.image_container("install-test", release)

    @staticmethod
    def _script(cmd: list[str], user: str | None, cwd: Path | None) -> str:
        as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
        return (f"cd {shlex.quote(str(cwd))} && " if cwd else "") + "exec " + shlex.join([*as_user, *cmd])

    def run(self, cmd: list[str], *, user: str | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        # (the engine's own timeout, 600 s, bounds a command here)
        return mdm_docker.exec_output(self.container, self._script(cmd, user, cwd), env)

    def spawn(self, cmd: list[str], output: Path, *, user: str | None = None, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Process:
        script = f"{self._script(cmd, user, cwd)} >>{shlex.quote(str(output))} 2>&1"
        return mdm_docker.ContainerProcess(self.container, script, output.with_suffix(".pid"), env)

    def stop(self, proc: Process | None) -> None:
        if proc is not None:
            proc.stop()  # type: ignore[attr-defined]

    def kill(self, pid: int) -> None:
        """SIGTERM, SIGKILL if it is still there after 10 s (a detached ejabberd: docker-init reaps it)."""
        self.run(["sh", "-c", f"kill {pid} 2>/dev/null || exit 0; for i in $(seq 200); do "
                              f"kill -0 {pid} 2>/dev/null || exit 0; sleep 0.05; done; kill -9 {pid}"])

    def chown(self, path: Path, owner: str, recursive: bool = True) -> None:
        r = self.run(["chown", *(["-R"] if recursive else []), owner, str(path)])
        assert r.returncode == 0, r.stderr

    def read(self, path: str) -> str:
        r = self.run(["cat", path])
        assert r.returncode == 0, r.stderr
        return r.stdout


def wait_port(port: int, proc: Process | None, what: str, log: Path | None, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and (code := proc.poll()) is not None:
            raise RuntimeError(f"{what} exited with {code}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s:\n{_tail(log)}")


def wait_log(log: Path, text: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {log} within {timeout}s:\n{_tail(log)}")


def _tail(log: Path | None, n: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL: a process we started stops."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def kill_pid(pid: int) -> None:
    """A process we started that is not our child (ejabberd, detached by ejabberdctl)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def setup_args(server: str, root: Path, component_port: int, config: Path, extra: list[str]) -> list[str]:
    """``mdm-component setup SERVER --write`` with every system path pointed into ``root``."""
    return ["setup", server, "--host", "localhost", "--config", str(config), "--write",
            "--component-config", str(root / "mdm" / "mdm-component.toml"), "--state-dir", str(root / "mdm" / "state"),
            "--unit-dir", str(root / "systemd"), "--user", current_user(), "--component-port", str(component_port),
            *extra]


def free_metrics_port(toml: Path) -> None:
    """The example config's metrics port (9107) may be taken on a shared machine: a free one."""
    text = toml.read_text()
    text = re.sub(r"^port = 9107", f"port = {free_ports(1)[0]}", text, count=1, flags=re.M)
    toml.write_text(text)


# --- Prosody -----------------------------------------------------------------------------------

class ProsodyInstall:
    """Prosody from Debian's package with an admin's config in ``root/etc`` (Debian's layout:
    prosody.cfg.lua root:prosody 0640 including conf.d/*.cfg.lua), run as the prosody user."""

    def __init__(self, root: Path, on: Here = HERE) -> None:
        self.root = root
        self.on = on
        self.etc = root / "etc"
        self.cfg = self.etc / "prosody.cfg.lua"
        self.modules = root / "modules"  # stands for /usr/local/lib/prosody/modules
        self.data = root / "data"
        self.log = root / "log" / "prosody.log"
        self.c2s_port, self.component_port = free_ports(2)
        self.proc: Process | None = None

    def write_admin_config(self, extra_modules: tuple[str, ...] = ()) -> None:
        for d in (self.etc / "conf.d", self.etc / "certs", self.modules, self.data, self.log.parent):
            d.mkdir(parents=True, exist_ok=True)
        mods = "; ".join(f'"{m}"' for m in (*DEBIAN_PROSODY_MODULES[self.on.release], *extra_modules))
        self.cfg.write_text(f"""-- an admin's prosody.cfg.lua, as Debian ships it, on test ports
admins = {{ }}
plugin_paths = {{ "{self.modules}" }}
modules_enabled = {{ {mods} }}
modules_disabled = {{ }}
pidfile = "{self.data}/prosody.pid"
data_path = "{self.data}"
log = {{ info = "{self.log}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
s2s_ports = {{ }}
component_ports = {{ {self.component_port} }}
http_ports = {{ }}
https_ports = {{ }}
-- the test clients log in without TLS on loopback
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
archive_expires_after = "1w"
VirtualHost "localhost"
Include "conf.d/*.cfg.lua"
""")
        self.cfg.chmod(0o640)
        self.on.chown(self.cfg, "root:prosody", recursive=False)
        self.on.chown(self.etc / "conf.d", "root:prosody", recursive=False)
        self.on.chown(self.data, "prosody")
        self.on.chown(self.log.parent, "prosody")

    ENV = {"HOME": "/var/lib/prosody"}  # the prosody user's, for its commands and the server

    def prosodyctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``prosodyctl --config …`` as the prosody user."""
        return self.on.run(["prosodyctl", "--config", str(self.cfg), *args], user="prosody", env=self.ENV)

    def register(self, accounts: list[Account]) -> None:
        for a in accounts:
            r = self.prosodyctl("register", a.user, "localhost", a.password)
            assert r.returncode == 0, f"prosodyctl register {a.user}: {r.stdout}{r.stderr}"

    def start(self, component: bool = True) -> None:
        """Until Prosody listens (on the component port too, unless the config has no component)."""
        self.proc = self.on.spawn(["prosody", "-F", "--config", str(self.cfg)], self.root / "prosody.stderr",
                                  user="prosody", env=self.ENV, cwd=self.root)
        wait_port(self.c2s_port, self.proc, "prosody", self.log)
        if component:
            wait_port(self.component_port, self.proc, "prosody", self.log)

    def stop(self) -> None:
        self.on.stop(self.proc)
        self.proc = None

    def handle(self, toml: Path) -> ServerHandle:
        cfg = load_config(toml)
        return ServerHandle("prosody", "localhost", self.c2s_port, self.component_port, cfg.jid, cfg.secret,
                            "conference.localhost", self.root, None, self.log)


# --- ejabberd ----------------------------------------------------------------------------------

class EjabberdInstall:
    """ejabberd from Debian's package driven by ``ejabberdctl`` (which runs it as the ejabberd
    user), with Debian's default ejabberd.yml on test ports, its own config dir, spool, logs and
    contrib modules dir, a distributed node on our own epmd (a free port, ERL_EPMD_PORT) and a
    cookie only this run knows. ``stop`` ends ejabberd (ejabberdctl stop, then its pid) and epmd."""

    def __init__(self, root: Path, on: Here = HERE) -> None:
        self.root = root
        self.on = on
        self.conf = root / "conf"
        self.cfg = self.conf / "ejabberd.yml"
        self.spool = root / "spool"
        self.logs = root / "logs"
        self.log = self.logs / "ejabberd.log"
        self.contrib = root / "ejabberd-modules"  # stands for ~ejabberd/.ejabberd-modules
        self.pidfile = self.spool / "ejabberd.pid"
        self.c2s_port, self.component_port, self.epmd_port = free_ports(3)
        self.node = f"mdm{secrets.token_hex(3)}@localhost"
        self.epmd: Process | None = None
        self.pid: int | None = None  # in the runner's pid namespace

    def write_admin_config(self, modules_drop: tuple[str, ...] = ()) -> None:
        for d in (self.conf, self.spool, self.logs, self.contrib):
            d.mkdir(parents=True, exist_ok=True)
        conf = yaml.safe_load(self.on.read("/etc/ejabberd/ejabberd.yml"))
        conf["hosts"] = ["localhost"]
        conf["loglevel"] = "info"
        conf["log_rotate_count"] = 0
        # Debian's listeners (5222, 5269, 5443, 5280, 1883, 3478) would clash on a shared machine:
        # one c2s listener on a free loopback port, plaintext for the test clients.
        conf["listen"] = [{"port": self.c2s_port, "ip": "127.0.0.1", "module": "ejabberd_c2s",
                           "max_stanza_size": 262144, "shaper": "c2s_shaper", "access": "c2s",
                           "starttls": False, "starttls_required": False}]
        conf.pop("acme", None)
        for m in ("mod_mqtt", "mod_bosh", "mod_stun_disco", *modules_drop):
            conf["modules"].pop(m, None)
        self.cfg.write_text("# Debian's default ejabberd.yml, on test ports\n" + yaml.safe_dump(conf, sort_keys=False))
        (self.conf / "inetrc").write_text(self.on.read("/etc/ejabberd/inetrc"))
        dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        (self.conf / "ejabberdctl.cfg").write_text(f"""# Debian's settings, and this run's node, epmd and paths
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -setcookie {secrets.token_hex(16)} {dist}"
ERLANG_NODE={self.node}
ERL_EPMD_ADDRESS=127.0.0.1
ERL_EPMD_PORT={self.epmd_port}
export ERL_EPMD_PORT
EJABBERD_PID_PATH={self.pidfile}
CONTRIB_MODULES_PATH={self.contrib}
EJABBERD_BYPASS_WARNINGS=true
""")
        self.on.chown(self.root, "ejabberd")

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.on.run(["ejabberdctl", "--config-dir", str(self.conf), "--spool", str(self.spool),
                    "--logs", str(self.logs), *args], timeout=timeout)

    def start(self) -> None:
        self.epmd = self.on.spawn(["epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                                  self.root / "epmd.log")
        wait_port(self.epmd_port, self.epmd, "epmd", self.root / "epmd.log", 10)
        r = self.ctl("start")
        assert r.returncode == 0, f"ejabberdctl start: {r.stdout}{r.stderr}"
        end = time.monotonic() + 60
        while not self.pidfile.exists() and time.monotonic() < end:
            time.sleep(0.1)
        if self.pidfile.exists():
            self.pid = int(self.pidfile.read_text().strip())
        r = self.ctl("started")
        assert r.returncode == 0, f"ejabberdctl started: {r.stdout}{r.stderr}\n{_tail(self.log)}"
        wait_port(self.c2s_port, None, "ejabberd", self.log)

    def register(self, accounts: list[Account]) -> None:
        for a in accounts:
            r = self.ctl("register", a.user, "localhost", a.password)
            assert r.returncode == 0, f"ejabberdctl register {a.user}: {r.stdout}{r.stderr}"

    def stop(self) -> None:
        if self.pid is not None or self.pidfile.exists():
            pid = self.pid or int(self.pidfile.read_text().strip())
            self.ctl("stop", timeout=60)
            self.ctl("stopped", timeout=60)
            self.on.kill(pid)  # in case it did not stop
            self.pid = None
        if self.epmd is not None:
            self.on.stop(self.epmd)
            self.epmd = None

    def handle(self, toml: Path) -> ServerHandle:
        cfg = load_config(toml)
        return ServerHandle("ejabberd", "localhost", self.c2s_port, self.component_port, cfg.jid, cfg.secret,
                            "conference.localhost", self.root, None, self.log)


# --- the component as its own process -----------------------------------------------------------

class ComponentProcess:
    """``mdm-component --config FILE`` as a process, with what ScenarioRun asks of a component."""

    def __init__(self, exe: str, toml: Path, log: Path, on: Here = HERE) -> None:
        self.exe = exe
        self.toml = toml
        self.log_path = log
        self.on = on
        self.proc: Process | None = None
        self.component = None  # no in-process view: scenarios that inspect it do not run here

    @property
    def config(self) -> Config:
        return load_config(self.toml)

    async def sees_inactive(self, jid: str) -> bool:
        return True  # the walkthrough has no CSI step

    async def serving(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 30.0) -> None:
        self.proc = self.on.spawn([self.exe, "--config", str(self.toml)], self.log_path)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (code := self.proc.poll()) is not None:
                raise RuntimeError(f"mdm-component exited with {code}:\n{_tail(self.log_path)}")
            with contextlib.suppress(OSError, AssertionError):
                from mdm.doctor import _metrics
                metrics = await _metrics(self.config, 1.0)
                if metrics and metrics.get("mdm_component_active") == 1.0:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"mdm-component did not serve within {timeout}s:\n{_tail(self.log_path)}")

    async def stop(self) -> None:
        await asyncio.to_thread(self.on.stop, self.proc)
        self.proc = None

    async def set(self, assignment: str) -> None:
        await asyncio.to_thread(self._set, assignment)

    def _set(self, assignment: str) -> None:
        """``mdm.active_window = 1``: edit the TOML, SIGHUP, until the component logs the reload."""
        key, _, value = (p.strip() for p in assignment.partition("="))
        section, _, name = key.partition(".")
        lines = self.toml.read_text().splitlines()
        start = lines.index(f"[{section}]") if f"[{section}]" in lines else None
        assert start is not None, f"no [{section}] in {self.toml}"
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        for i in range(start + 1, end):
            if re.match(rf"{re.escape(name)}\s*=", lines[i]):
                lines[i] = f"{name} = {value}"
                break
        else:
            lines.insert(start + 1, f"{name} = {value}")
        self.toml.write_text("\n".join(lines) + "\n")
        before = self.log_path.read_text(errors="replace").count("reconfigured")
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        end_at = time.monotonic() + 10
        while self.log_path.read_text(errors="replace").count("reconfigured") <= before:
            assert time.monotonic() < end_at, f"no reload logged after SIGHUP:\n{_tail(self.log_path)}"
            time.sleep(0.02)

    async def _unsupported(self, *args):
        raise AssertionError("the installed component is not crashed, paused or inspected here")

    crash = pause = resume = session = push_registered = _unsupported


async def walkthrough(server: ServerHandle, component: ComponentProcess,
                      name: str = "R10-flow-walkthrough.scs") -> list[str]:
    """Run one conformance scenario against an installed server and component; its output lines."""
    scenario = load_scenarios([CONFORMANCE / name])[0].for_server(server.kind)
    assert scenario.error is None or not scenario.error, scenario.error
    out: list[str] = []
    await ScenarioRun(scenario, server, component, out.append, False).run()  # type: ignore[arg-type]
    return out


def scenario_accounts(name: str = "R10-flow-walkthrough.scs") -> list[Account]:
    return accounts_of(load_scenarios([CONFORMANCE / name]))
