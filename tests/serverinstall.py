"""Servers configured the way docs/install-prosody.md and docs/install-ejabberd.md say, for the
install tests (issue 12): an admin's config modelled on Debian's, ``mdm-component setup … --write``
with the paths pointed into a temp dir, the servers run as their own users (``prosody``,
``ejabberd``, as Debian's packages run them), and the component as its own process. Everything
listens on free loopback ports and is stopped by pid; nothing stays behind.

``ComponentProcess`` stands in for the harness's in-process component, so a conformance scenario
runs against a server and an ``mdm-component`` process configured like a real install:
``Component sets mdm.x = v`` edits the component's TOML and sends SIGHUP (R1.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from mdm.config import Config
from mdm.config import load as load_config
from mdm_harness.ports import free_ports
from mdm_harness.runner import ScenarioRun, accounts_of
from mdm_harness.scenario import load_scenarios
from mdm_harness.servers.base import Account, ServerHandle

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance"

# Debian 12's default modules_enabled (prosody 0.12.3), "posix" included: the server runs as the
# prosody user, as Debian runs it, so posix does not close the listeners. Without "tls": the test
# clients log in plaintext on loopback and there is no certificate for the test host.
DEBIAN_PROSODY_MODULES = (
    "disco", "roster", "saslauth", "blocklist", "bookmarks", "carbons", "dialback", "limits", "pep",
    "private", "smacks", "vcard4", "vcard_legacy", "csi_simple", "invites", "invites_adhoc", "invites_register",
    "ping", "register", "time", "uptime", "version", "admin_adhoc", "admin_shell", "posix")


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


def chown(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for root, _dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 180), **kw)


def wait_port(port: int, proc: subprocess.Popen | None, what: str, log: Path | None, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
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

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etc = root / "etc"
        self.cfg = self.etc / "prosody.cfg.lua"
        self.modules = root / "modules"  # stands for /usr/local/lib/prosody/modules
        self.data = root / "data"
        self.log = root / "log" / "prosody.log"
        self.c2s_port, self.component_port = free_ports(2)
        self.proc: subprocess.Popen | None = None

    def write_admin_config(self, extra_modules: tuple[str, ...] = ()) -> None:
        for d in (self.etc / "conf.d", self.etc / "certs", self.modules, self.data, self.log.parent):
            d.mkdir(parents=True, exist_ok=True)
        mods = "; ".join(f'"{m}"' for m in (*DEBIAN_PROSODY_MODULES, *extra_modules))
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
        os.chown(self.cfg, 0, grp.getgrnam("prosody").gr_gid)
        self.cfg.chmod(0o640)
        os.chown(self.etc / "conf.d", 0, grp.getgrnam("prosody").gr_gid)
        chown(self.data, "prosody")
        chown(self.log.parent, "prosody")

    def register(self, accounts: list[Account]) -> None:
        for a in accounts:
            r = run(["prosodyctl", "--config", str(self.cfg), "register", a.user, "localhost", a.password],
                    user="prosody", group="prosody", extra_groups=[], env=self._env())
            assert r.returncode == 0, f"prosodyctl register {a.user}: {r.stdout}{r.stderr}"

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/var/lib/prosody"}

    def start(self, component: bool = True) -> None:
        """Until Prosody listens (on the component port too, unless the config has no component)."""
        with open(self.root / "prosody.stderr", "wb") as err:
            self.proc = subprocess.Popen(["prosody", "-F", "--config", str(self.cfg)], user="prosody",
                                         group="prosody", extra_groups=[], env=self._env(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                         cwd=str(self.root))
        wait_port(self.c2s_port, self.proc, "prosody", self.log)
        if component:
            wait_port(self.component_port, self.proc, "prosody", self.log)

    def stop(self) -> None:
        stop(self.proc)
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

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "conf"
        self.cfg = self.conf / "ejabberd.yml"
        self.spool = root / "spool"
        self.logs = root / "logs"
        self.log = self.logs / "ejabberd.log"
        self.contrib = root / "ejabberd-modules"  # stands for ~ejabberd/.ejabberd-modules
        self.pidfile = self.spool / "ejabberd.pid"
        self.c2s_port, self.component_port, self.epmd_port = free_ports(3)
        self.node = f"mdm{secrets.token_hex(3)}@localhost"
        self.epmd: subprocess.Popen | None = None
        self.pid: int | None = None

    def write_admin_config(self, modules_drop: tuple[str, ...] = ()) -> None:
        for d in (self.conf, self.spool, self.logs, self.contrib):
            d.mkdir(parents=True, exist_ok=True)
        conf = yaml.safe_load(Path("/etc/ejabberd/ejabberd.yml").read_text())
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
        shutil.copy("/etc/ejabberd/inetrc", self.conf / "inetrc")
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
        chown(self.root, "ejabberd")

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(["ejabberdctl", "--config-dir", str(self.conf), "--spool", str(self.spool),
                    "--logs", str(self.logs), *args], timeout=timeout)

    def start(self) -> None:
        with open(self.root / "epmd.log", "wb") as out:
            self.epmd = subprocess.Popen(["epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
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
            kill_pid(pid)  # in case it did not stop
            self.pid = None
        if self.epmd is not None:
            stop(self.epmd)
            self.epmd = None

    def handle(self, toml: Path) -> ServerHandle:
        cfg = load_config(toml)
        return ServerHandle("ejabberd", "localhost", self.c2s_port, self.component_port, cfg.jid, cfg.secret,
                            "conference.localhost", self.root, None, self.log)


# --- the component as its own process -----------------------------------------------------------

class ComponentProcess:
    """``mdm-component --config FILE`` as a process, with what ScenarioRun asks of a component."""

    def __init__(self, exe: str, toml: Path, log: Path) -> None:
        self.exe = exe
        self.toml = toml
        self.log_path = log
        self.proc: subprocess.Popen | None = None
        self.component = None  # no in-process view: scenarios that inspect it do not run here

    @property
    def config(self) -> Config:
        return load_config(self.toml)

    async def sees_inactive(self, jid: str) -> bool:
        return True  # the walkthrough has no CSI step

    async def serving(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([self.exe, "--config", str(self.toml)], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mdm-component exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            with contextlib.suppress(OSError, AssertionError):
                from mdm.doctor import _metrics
                metrics = await _metrics(self.config, 1.0)
                if metrics and metrics.get("mdm_component_active") == 1.0:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"mdm-component did not serve within {timeout}s:\n{_tail(self.log_path)}")

    async def stop(self) -> None:
        stop(self.proc)
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
