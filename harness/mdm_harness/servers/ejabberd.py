"""ejabberd 23.01 (Debian's package) as an ordinary process: a generated config on free loopback
ports, its own Mnesia spool and log in a temp dir, the MDM bridge's .beam on the code path.

The node is started with ``erl`` directly, not through ejabberdctl: it is then a child process we
stop by pid, it runs as the current user (ejabberdctl switches root to the ``ejabberd`` user), and
it is not distributed, so no epmd daemon stays behind. Accounts are registered through
ejabberd's own ``register`` command over mod_http_api, limited to loopback: one HTTP request
each, where ``ejabberdctl register`` boots an Erlang VM per call (about a second)."""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..ports import free_ports
from ..push import SECRET as PUSH_SECRET
from ..waiting import poll_until
from .base import Account, ServerHandle, plugin_dir, wait_listening
from .tls import self_signed

log = logging.getLogger(__name__)

DOMAIN = "localhost"
SECRET = "mdm-test-secret"


def ejabberd_lib() -> Path:
    """Debian's ejabberd lib dir, e.g. /usr/lib/x86_64-linux-gnu/ejabberd-23.01-1."""
    found = sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app"))
    if not found or shutil.which("erl") is None:
        raise RuntimeError("ejabberd is not installed (apt-get install ejabberd erlang-dev)")
    return Path(found[-1]).parents[1]


def bridge_ebin() -> Path:
    """The compiled bridge: MDM_EJABBERD_EBIN, or build/erlang/ebin of the checkout, (re)built by
    scripts/build-ejabberd-bridge when the source is newer."""
    env = os.environ.get("MDM_EJABBERD_EBIN")
    if env:
        return Path(env)
    root = plugin_dir().parent
    build = root / "scripts" / "build-ejabberd-bridge"
    result = subprocess.run([str(build)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the ejabberd bridge failed:\n{result.stderr}{result.stdout}")
    return root / "build" / "erlang" / "ebin"


@dataclass
class EjabberdHandle(ServerHandle):
    http_port: int = 0

    async def api(self, command: str, args: dict[str, str]) -> object:
        """One of ejabberd's commands over mod_http_api (loopback only, see render_config)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/api/{command}",
                                     data=json.dumps(args).encode(),
                                     headers={"Content-Type": "application/json"})

        def post() -> object:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read().decode())
        return await asyncio.to_thread(post)

    async def register(self, accounts: list[Account]) -> None:
        """Create the accounts with ejabberd's own ``register`` command (one HTTP request each)."""
        for a in accounts:
            answer = await self.api("register", {"user": a.user, "host": self.domain, "password": a.password})
            if "successfully registered" not in str(answer):
                raise RuntimeError(f"ejabberd did not register {a.user}: {answer}")

    async def wait_session_closed(self, full_jid: str, timeout: float = 10.0) -> None:
        """ejabberd ends a session in the client's own process, after the socket closed: a
        message routed meanwhile would still be handed to the dying session. Wait until the
        session manager no longer lists it."""
        bare, _, resource = full_jid.partition("/")
        user, _, host = bare.partition("@")

        async def gone() -> bool:
            return resource not in await self.api("user_resources", {"user": user, "host": host})  # type: ignore[operator]
        await poll_until(gone, timeout, f"ejabberd still lists {full_jid} {timeout}s after it disconnected")


def _q(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML scalar


def render_config(c2s_port: int, component_port: int, http_port: int, *, bridge: bool = True,
                  extra_modules: tuple[str, ...] = (), without_modules: tuple[str, ...] = (),
                  log_level: str = "info", ack_timeout: float = 2.0, features: tuple[str, ...] = (),
                  direct_tls_port: int | None = None, tls_pem: Path | None = None,
                  push_port: int | None = None, sql: dict[str, object] | None = None,
                  hibernation_timeout: int | None = None, fast: bool = False) -> str:
    """``fast``: the server has mod_auth_fast (XEP-0484, ejabberd 24.12), turned on with the
    ``sasl2`` feature (R9.11). ``sql``: PostgreSQL for the archive (keys server, port, database, username; the schema of
    Debian's /usr/share/ejabberd/sql/pg.sql loaded; needs erlang-p1-pgsql): benchmarks with the
    archive on, since the Mnesia archive manages ~110 IM/s here (issue 15)."""
    modules: dict[str, str] = {
        "mod_roster": "{}",
        "mod_disco": "{}",
        "mod_offline": "{}",
        "mod_mam": "{default: always}",
        "mod_privacy": "{}",
        "mod_blocking": "{}",
        "mod_ping": "{}",
        "mod_time": "{}",
        "mod_version": "{show_os: false}",
        "mod_http_api": "{}",
        # the server's own XEP-0280 and XEP-0352: the baseline, and what the bridge falls back to
        # while the component is not serving (R9.10)
        "mod_carboncopy": "{}",
        "mod_client_state": "{}",
        "mod_muc": "{host: " + _q("conference." + DOMAIN) + ", access_create: all, "
                   "default_room_options: {mam: true}}",
    }
    # issue 11: what phones use (XEP-0198 with resumption, XEP-0357 with the summary fields the
    # harness's push app server double records)
    if "stream-management" in features:
        modules["mod_stream_mgmt"] = f"{{resume_timeout: {int(hibernation_timeout or 300)}}}"
    if "push" in features:
        modules["mod_push"] = "{include_body: true, include_sender: true}"
    if "sasl2" in features and fast:  # R9.11: SASL2 and Bind2 are built in (24.02+), FAST is a module
        modules["mod_auth_fast"] = "{}"
    if "pep" in features:  # XEP-0163, for XEP-0490 MDS (R4.3)
        modules["mod_caps"] = "{}"
        modules["mod_pubsub"] = '{plugins: ["flat", "pep"]}'

    for m in without_modules:
        modules.pop(m, None)
    for m in extra_modules:
        modules.setdefault(m, "{}")
    sql_lines = ""
    if sql is not None:
        if "mod_mam" in modules:
            modules["mod_mam"] = "{default: always, db_type: sql}"
        sql_lines = (f"sql_type: pgsql\nsql_server: {_q(str(sql['server']))}\nsql_port: {sql['port']}\n"
                     f"sql_database: {_q(str(sql['database']))}\nsql_username: {_q(str(sql['username']))}\n"
                     'sql_password: ""\n')
    if bridge:
        timeout = max(1, round(ack_timeout))  # whole seconds in ejabberd's option
        modules["mod_mdm_bridge"] = "{component: " + _q("mdm." + DOMAIN) + f", ack_timeout: {timeout}}}"
    module_lines = "\n".join(f"  {name}: {opts}" for name, opts in modules.items())
    # ejabberd_service registers every host of its listener for each component that logs in: the
    # push app server double gets a listener of its own, or it would take mdm.<domain> as well
    push_listener = (f"""  - port: {push_port}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      {_q("push." + DOMAIN)}:
        password: {_q(PUSH_SECRET)}
""" if push_port else "")
    direct_tls = (f"""  - port: {direct_tls_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    # R9.5: direct TLS (XEP-0368), as a remote client reaches the server
    tls: true
    shaper: none
    max_stanza_size: 1048576
""" if direct_tls_port else "")
    websocket = "      /ws: ejabberd_http_ws\n" if "websocket" in features else ""
    certfiles = f"[{_q(str(tls_pem))}]" if tls_pem else "[]"
    return f"""# generated by mdm-harness: a throw-away ejabberd for tests
hosts: [{_q(DOMAIN)}]
loglevel: {log_level}
log_rotate_count: 0
hide_sensitive_log_data: false
certfiles: {certfiles}
listen:
  - port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    # ejabberd's default listen backlog is 5: a burst of logins (bench/scale.py, P4: 100 in
    # flight) overflows it and the kernel drops or resets connections
    backlog: 1024
    # plaintext logins on loopback (STARTTLS measured 25x slower for bursts); offered, not
    # required, where a scenario has a SASL2 + Bind2 phone (R9.11): ejabberd 24.12 offers SASL2
    # only on an encrypted stream
    starttls: {"true" if "sasl2" in features else "false"}
    starttls_required: false
    shaper: none
    max_stanza_size: 1048576
{direct_tls}  - port: {component_port}
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      {_q("mdm." + DOMAIN)}:
        password: {_q(SECRET)}
{push_listener}  - port: {http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
{websocket}{sql_lines}s2s_access: none
auth_method: internal
auth_password_format: plain
# no rate limits: tests and benchmarks must not measure the limiter
shaper: {{}}
shaper_rules: {{}}
acl:
  loopback:
    ip: ["127.0.0.0/8"]
access_rules:
  local:
    allow: all
api_permissions:
  "the harness registers accounts":
    from: mod_http_api
    who:
      acl: loopback
    what: ["register", "user_resources"]
modules:
{module_lines}
"""


async def launch(cfg: Path, workdir: Path, ebin: Path | None, *, dist_args: list[str] | None = None,
                 extra_env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """Start ejabberd with the config file ``cfg``: log, Mnesia spool and crash dump in ``workdir``.
    ``dist_args`` make it a distributed node (a cluster member, servers/ejabberd_cluster.py)."""
    lib = ejabberd_lib()
    erl = shutil.which("erl")
    assert erl is not None
    spool = workdir / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, EJABBERD_CONFIG_PATH=str(cfg), EJABBERD_LOG_PATH=str(workdir / "ejabberd.log"),
               ERL_LIBS=str(lib.parent), ERL_CRASH_DUMP=str(workdir / "erl_crash.dump"),
               ERL_CRASH_DUMP_BYTES="0", HOME=str(workdir), **(extra_env or {}))
    args = [erl, "-noinput", "-noshell", "+K", "true", *(dist_args or [])]
    if ebin is not None:
        args += ["-pa", str(ebin)]
    args += ["-mnesia", "dir", json.dumps(str(spool)), "-s", "ejabberd"]
    with open(workdir / "ejabberd.stdout", "wb") as out:
        return await asyncio.create_subprocess_exec(
            *args, cwd=str(workdir), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)  # Ctrl-C in the terminal goes to us; we stop it by pid


async def wait_started(proc: asyncio.subprocess.Process, log_file: Path, timeout: float = 60.0) -> None:
    """Until ejabberd logs that it is started: its listeners open before its modules load."""
    def started() -> bool:
        if proc.returncode is not None:  # the reason, in the message: the directory may not outlive the run
            tails = [f"--- {f.name} ---\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
                     for f in (log_file, log_file.with_suffix(".stdout")) if f.exists()]
            raise RuntimeError(f"ejabberd exited with {proc.returncode}; see {log_file}\n" + "\n".join(tails))
        return log_file.exists() and " is started in the node " in log_file.read_text(errors="replace")
    await poll_until(started, timeout, f"ejabberd did not start within {timeout}s; see {log_file}", 0.05)


async def start_ejabberd(accounts: list[Account], workdir: Path, *, bridge: bool = True,
                         extra_modules: tuple[str, ...] = (), without_modules: tuple[str, ...] = (),
                         ack_timeout: float = 2.0, features: tuple[str, ...] = (),
                         sql: dict[str, object] | None = None, hibernation_timeout: int | None = None) -> ServerHandle:
    ebin = bridge_ebin() if bridge else None
    workdir.mkdir(parents=True, exist_ok=True)
    c2s_port, component_port, http_port = free_ports(3)
    direct_tls_port = free_ports(1)[0] if "direct-tls" in features else None
    push_port = free_ports(1)[0] if "push" in features else None
    tls_pem = None
    if direct_tls_port or "sasl2" in features:  # R9.5 direct TLS, R9.11 STARTTLS for SASL2
        cert, key = await self_signed(workdir)
        tls_pem = workdir / "localhost.pem"  # ejabberd takes the certificate and its key in one file
        tls_pem.write_text(cert.read_text() + key.read_text())
        tls_pem.chmod(0o600)
    cfg = workdir / "ejabberd.yml"
    level = "debug" if os.environ.get("MDM_HARNESS_DEBUG") else "info"
    cfg.write_text(render_config(c2s_port, component_port, http_port, bridge=bridge,
                                 extra_modules=extra_modules, without_modules=without_modules,
                                 log_level=level, ack_timeout=ack_timeout, features=features,
                                 direct_tls_port=direct_tls_port, tls_pem=tls_pem, push_port=push_port,
                                 sql=sql, hibernation_timeout=hibernation_timeout))
    proc = await launch(cfg, workdir, ebin)
    log_file = workdir / "ejabberd.log"
    handle = EjabberdHandle("ejabberd", DOMAIN, c2s_port, component_port, "mdm." + DOMAIN, SECRET,
                            "conference." + DOMAIN, workdir, proc.pid, log_file, list(accounts),
                            http_port=http_port, direct_tls_port=direct_tls_port or 0,
                            websocket_url=f"ws://127.0.0.1:{http_port}/ws" if "websocket" in features else "",
                            push_jid="push." + DOMAIN if "push" in features else "", push_port=push_port or 0)
    try:
        await wait_started(proc, log_file)
        for port in (http_port, c2s_port, component_port):
            await wait_listening(port, proc, "ejabberd", log_file, timeout=60.0)
        await handle.register(accounts)
    except BaseException:
        await handle.stop()
        raise
    log.debug("ejabberd pid %s: c2s %s, component %s, dir %s", proc.pid, c2s_port, component_port, workdir)
    return handle
