"""Prosody 0.12 (Debian's package) as an ordinary process: a generated config on free loopback
ports, a temp data dir, accounts created by ``prosodyctl register`` against that config (so the
server's own storage encodes the names: ``pars-a`` is stored as ``pars%2da``), the MDM bridge on
plugin_paths, and a server profile's extra modules, options and components (profiles.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from pathlib import Path

from ..ports import free_ports
from ..profiles import ComponentSpec, ServerProfile, lua_assignments, lua_value
from ..push import SECRET as PUSH_SECRET
from .base import Account, ServerHandle, plugin_dir, wait_listening
from .tls import self_signed

log = logging.getLogger(__name__)

DOMAIN = "localhost"
SECRET = "mdm-test-secret"


def bridge_dir() -> Path:
    """plugin/prosody beside the installed mdm package (the checkout, installed editable)."""
    env = os.environ.get("MDM_PROSODY_PLUGINS")
    if env:
        return Path(env)
    return plugin_dir() / "prosody"


def sasl2_modules(modules: Path = Path("/usr/lib/prosody/modules")) -> tuple[str, ...]:
    """R9.11: the prosody-modules SASL2 modules this Prosody can run (besides mod_sasl2 and
    mod_sasl2_bind2, which run on 0.12 and 13). mod_sasl2_sm calls mod_smacks' ``do_resume`` /
    ``do_enable`` and mod_sasl2_fast reads the stream header from the "stream-features" event:
    Prosody 13 has both, 0.12.3 neither (mod_sasl2_fast then fails every connection at its
    features), so on 0.12 a Bind2 phone enables and resumes XEP-0198 with the nonzas after SASL2
    and authenticates with its password."""
    def has(name: str, pattern: str) -> bool:
        try:
            return re.search(pattern, (modules / f"mod_{name}.lua").read_text()) is not None
        except OSError:
            return False
    return tuple(m for m, ok in (("sasl2_sm", has("smacks", r"function do_resume")),
                                 ("sasl2_fast", has("c2s", r'"stream-features", \{[^}]*\bstream\s*='))) if ok)


def _lua(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _component(jid: str, spec: ComponentSpec) -> str:
    head = f"Component {_lua(jid)}" + (f" {_lua(spec.module)}" if spec.module else "")
    return head + "\n" + lua_assignments(spec.options, "    ")


def render_config(workdir: Path, c2s_port: int, component_port: int, *, bridge: bool = True,
                  extra_modules: tuple[str, ...] = (), without_modules: tuple[str, ...] = (),
                  log_level: str = "info", ack_timeout: float = 2.0,
                  profile: ServerProfile | None = None, http_port: int | None = None,
                  features: tuple[str, ...] = (), direct_tls_port: int | None = None,
                  tls: tuple[Path, Path] | None = None, hibernation_timeout: int | None = None,
                  sasl2_extra: tuple[str, ...] = (), run_as_root: bool | None = None) -> str:
    """``sasl2_extra``: what sasl2_modules() found this Prosody can run besides mod_sasl2 and
    mod_sasl2_bind2 (R9.11): mod_sasl2_sm (with stream management only), mod_sasl2_fast.
    ``run_as_root``: whether the server runs as root (default: whether we do)."""
    profile = profile or ServerProfile()
    if "stream-management" not in features:
        sasl2_extra = tuple(m for m in sasl2_extra if m != "sasl2_sm")
    if run_as_root is None:
        run_as_root = os.geteuid() == 0
    without = set(without_modules) | set(profile.disable)
    modules = [m for m in ("roster", "saslauth", "disco", "ping", "presence", "message", "iq", "offline",
                           "mam", "blocklist", "time", "version") if m not in without]
    modules += [m for m in (*extra_modules, *profile.modules) if m not in modules and m not in without]
    # issue 11: what phones and remote clients use (mod_smacks, mod_cloud_notify, mod_websocket)
    for feature, mods in (("stream-management", ("smacks",)), ("push", ("cloud_notify",)),
                          ("websocket", ("websocket",)), ("pep", ("pep",)),
                          # R9.11: how today's phones log in (prosody-modules)
                          ("sasl2", ("sasl2", "sasl2_bind2", *sasl2_extra))):
        if feature in features:
            modules += [m for m in mods if m not in modules]
    if bridge:
        modules.append("mdm_bridge")
    else:
        modules.append("carbons")  # the baseline: the server's own XEP-0280
    muc = ComponentSpec("conference", "muc", {"modules_enabled": ["muc_mam"]})
    components = [c for c in profile.components if c.jid(DOMAIN) != muc.jid(DOMAIN)]
    for c in profile.components:
        if c.jid(DOMAIN) == muc.jid(DOMAIN):  # the profile adds to the MUC service we always run
            muc = ComponentSpec(muc.name, c.module or muc.module, {**muc.options, **c.options})
    http = f"{{ {http_port} }}" if http_port else "{ }"
    extra_global = lua_assignments(profile.options)
    if profile.admins:
        extra_global += f"admins = {lua_value(list(profile.admins))}\n"
    if http_port:
        extra_global += 'http_interfaces = { "127.0.0.1" }\n'
    if "websocket" in features:
        # plaintext ws:// on loopback, as the plain c2s port; requests for 127.0.0.1 go to our host
        extra_global += f'consider_websocket_secure = true\nhttp_default_host = {_lua(DOMAIN)}\n'
    if hibernation_timeout is not None:
        extra_global += f"smacks_hibernation_time = {int(hibernation_timeout)}\n"
    if "push" in features:
        # the summary fields the push app server double records (XEP-0357 §7)
        extra_global += "push_notification_with_body = true\npush_notification_with_sender = true\n"
    if tls is not None:
        extra_global += (f"c2s_direct_tls_ssl = {{ certificate = {_lua(str(tls[0]))}, key = {_lua(str(tls[1]))} }}\n"
                         f"ssl = {{ certificate = {_lua(str(tls[0]))}, key = {_lua(str(tls[1]))} }}\n")
    push_component = (f'Component {_lua("push." + DOMAIN)}\n    component_secret = {_lua(PUSH_SECRET)}\n'
                      if "push" in features else "")
    profile_note = f"-- server profile: {profile.name}\n" if profile.name else ""
    return f"""-- generated by mdm-harness: a throw-away Prosody for tests
{profile_note}{profile.lua + chr(10) if profile.lua else ""}pidfile = {_lua(str(workdir / "prosody.pid"))}
data_path = {_lua(str(workdir / "data"))}
plugin_paths = {{ {_lua(str(bridge_dir()))} }}
log = {{ {{ levels = {{ min = {_lua(log_level)} }}, to = "file", filename = {_lua(str(workdir / "prosody.log"))} }} }}
daemonize = false
-- root on CI: mod_posix would close the listeners; we are an ordinary foreground process
modules_disabled = {{ "posix" }}
-- Options whose defaults moved between Prosody 0.12.3 and 13 (R9.12), set so both behave alike:
-- Prosody 13 refuses to start as root unless told (util.startup; on 0.12 mod_posix read it);
run_as_root = {str(run_as_root).lower()}
-- XEP-0191: a message from a blocked contact bounces with an error, as before 0.12.5 (R2.6).
bounce_blocked_messages = true
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ {direct_tls_port or ""} }}
s2s_ports = {{ }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
http_ports = {http}
https_ports = {{ }}
-- plaintext logins on loopback (STARTTLS measured 25x slower for bursts)
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
-- no rate limits: tests and benchmarks must not measure the limiter
limits = {{ }}
-- TCP_NODELAY on every connection (Prosody 0.12 has no per-port switch): otherwise Nagle's
-- algorithm holds the bridge's small writes to the component until the peer's delayed ACK
-- (issue 15; docs/benchmarks.md)
network_settings = {{ nagle = false }}
muc_room_locking = false
archive_expires_after = "never"
default_archive_policy = true
modules_enabled = {{ {", ".join(_lua(m) for m in modules)} }}
{extra_global}
VirtualHost {_lua(DOMAIN)}
    mdm_component = {_lua("mdm." + DOMAIN)}
    mdm_ack_timeout = {ack_timeout:g} -- seconds; short by default, so fail-open scenarios stay quick
{lua_assignments(profile.host, "    ")}
Component {_lua("mdm." + DOMAIN)}
    component_secret = {_lua(SECRET)}
{push_component}
{_component(muc.jid(DOMAIN), muc)}
""" + "\n".join(_component(c.jid(DOMAIN), c) for c in components)


# Above this many accounts (the P4 scale benchmark's 5,000 users, issue 15), names Prosody stores
# as they are get their account file written directly: prosodyctl boots a Lua VM per account.
BULK_ACCOUNTS = 64
PLAIN_NAME = re.compile(r"[a-z0-9]+")  # unchanged by nodeprep and by datamanager's %W encoding


def write_accounts(data: Path, domain: str, accounts: list[Account]) -> list[Account]:
    """What ``prosodyctl register`` writes with ``storage = "internal"`` and internal_plain
    authentication (``data/<host>/accounts/<user>.dat``), for accounts with plain names; returns
    the others, for prosodyctl."""
    if not PLAIN_NAME.fullmatch(domain):
        return list(accounts)
    folder = data / domain / "accounts"
    folder.mkdir(parents=True, exist_ok=True)
    rest = []
    for a in accounts:
        if PLAIN_NAME.fullmatch(a.user):
            (folder / f"{a.user}.dat").write_text(f"return {{\n\t[\"password\"] = {_lua(a.password)};\n}};\n")
        else:
            rest.append(a)
    return rest


async def register_accounts(exe: str, cfg: Path, domain: str, accounts: list[Account]) -> None:
    """``prosodyctl register`` against the generated config, before the server starts: Prosody's
    own code nodepreps the name and encodes it for its storage (``pars-a`` -> ``pars%2da.dat``).
    ``--root``: as root, prosodyctl would otherwise switch to the prosody user, who cannot write
    our temp dir."""
    async def register(a: Account) -> None:
        proc = await asyncio.create_subprocess_exec(
            exe, "--root", "--config", str(cfg), "register", a.user, domain, a.password,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"prosodyctl register {a.user}@{domain} failed ({proc.returncode}):\n"
                               + out.decode(errors="replace")[-2000:])
    await asyncio.gather(*(register(a) for a in accounts))


async def start_prosody(accounts: list[Account], workdir: Path, *, bridge: bool = True,
                        extra_modules: tuple[str, ...] = (), without_modules: tuple[str, ...] = (),
                        ack_timeout: float = 2.0, profile: ServerProfile | None = None,
                        features: tuple[str, ...] = (), hibernation_timeout: int | None = None) -> ServerHandle:
    exe = shutil.which("prosody")
    ctl = shutil.which("prosodyctl")
    if exe is None or ctl is None:
        raise RuntimeError("prosody is not installed (apt-get install prosody prosody-modules lua5.4)")
    workdir.mkdir(parents=True, exist_ok=True)
    c2s_port, component_port = free_ports(2)
    needs_http = (profile is not None and profile.needs_http) or "websocket" in features
    http_port = free_ports(1)[0] if needs_http else None
    direct_tls_port = free_ports(1)[0] if "direct-tls" in features else None
    tls = await self_signed(workdir) if direct_tls_port else None
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    cfg = workdir / "prosody.cfg.lua"
    level = "debug" if os.environ.get("MDM_HARNESS_DEBUG") else "info"
    cfg.write_text(render_config(workdir, c2s_port, component_port, bridge=bridge,
                                 extra_modules=extra_modules, without_modules=without_modules, log_level=level,
                                 ack_timeout=ack_timeout, profile=profile, http_port=http_port,
                                 features=features, direct_tls_port=direct_tls_port, tls=tls,
                                 hibernation_timeout=hibernation_timeout,
                                 sasl2_extra=sasl2_modules()))
    bulk = len(accounts) > BULK_ACCOUNTS
    await register_accounts(ctl, cfg, DOMAIN, write_accounts(data, DOMAIN, accounts) if bulk else accounts)
    with open(workdir / "prosody.stderr", "wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            exe, "--config", str(cfg), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
            start_new_session=True)  # Ctrl-C in the terminal goes to us; we stop it by pid
    handle = ServerHandle("prosody", DOMAIN, c2s_port, component_port, "mdm." + DOMAIN, SECRET,
                          "conference." + DOMAIN, workdir, proc.pid, workdir / "prosody.log",
                          list(accounts), direct_tls_port=direct_tls_port or 0,
                          websocket_url=f"ws://127.0.0.1:{http_port}/xmpp-websocket" if "websocket" in features else "",
                          push_jid="push." + DOMAIN if "push" in features else "",
                          push_port=component_port if "push" in features else 0)
    try:
        await wait_listening(c2s_port, proc, "prosody", workdir / "prosody.log")
        await wait_listening(component_port, proc, "prosody", workdir / "prosody.log")
    except BaseException:
        await handle.stop()
        raise
    log.debug("prosody pid %s: c2s %s, component %s, dir %s", proc.pid, c2s_port, component_port, workdir)
    return handle
