"""``mdm-component setup prosody|ejabberd``: check the server's version and configuration, then
print (or, with ``--write``, write) exactly what to add, and where the module files go.

What it writes with ``--write`` (every path can be changed with an option):

* Prosody: the module folder ``mod_mdm_bridge/`` (prosody-modules layout) into a directory on
  ``plugin_paths`` (Debian: ``/usr/local/lib/prosody/modules``), and ``conf.d/mdm.cfg.lua`` beside
  ``prosody.cfg.lua`` (Debian's config includes ``conf.d/*.cfg.lua``): the host's
  ``modules_enabled`` (added to the global list for that host) and the ``Component`` block.
* ejabberd: the module's sources (ejabberd-contrib layout) into
  ``~ejabberd/.ejabberd-modules/sources/mod_mdm_bridge``, owned by the ``ejabberd`` user, with
  ``conf/mod_mdm_bridge.yml`` holding the component's listener and secret; then
  ``ejabberdctl module_install mod_mdm_bridge`` builds, installs and starts it.
* Both: the component's config (``/etc/mdm-component/mdm-component.toml``, same JID and secret,
  store under ``/var/lib/mdm-component``) and a systemd unit running this installation.

Nothing already there is overwritten except the files this command owns (``mdm.cfg.lua``, the
module files, the module's ``conf/``); an existing component config is checked, not replaced.
Server configs are read with the servers' own parsers where there is one (Prosody's
configmanager, through ``lua``), so ``Include`` files count.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import __version__

# Modules that hold, drop or reorder the stanzas the component holds: they fight with it.
# (mod_carbons and mod_csi_simple are fine: the bridge loads them itself for fail-open, R9.10.)
PROSODY_FIGHTING = {
    "csi_battery_saver": "holds and reorders the same stanzas the component holds (R5)",
    "throttle_presence": "holds presence for CSI-inactive sessions itself",
    "filter_chatstates": "drops chat states for CSI-inactive sessions: MDM flushes them instead",
    "csi_pump": "a second CSI queue beside the component's",
}
EJABBERD_NEEDED = ("mod_carboncopy", "mod_client_state")

PROSODY_MIN = (0, 12)
EJABBERD_MIN = (23, 1)


@dataclass
class Report:
    """What setup found: errors stop a working install, warnings are worth reading."""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def print(self) -> None:
        for label, items in (("error", self.errors), ("warning", self.warnings), ("ok", self.notes)):
            for item in items:
                print(f"  {label}: {item}")


def package_file(*parts: str) -> Path:
    """A file the package ships (bridges/…, data/…), as a real path."""
    return Path(str(resources.files("mdm").joinpath(*parts)))


def bridge_dir(server: str) -> Path:
    """The bridge in its ecosystem's layout: ``bridges/prosody/mod_mdm_bridge`` (prosody-modules)
    or ``bridges/ejabberd/mod_mdm_bridge`` (ejabberd-contrib)."""
    return package_file("bridges", server, "mod_mdm_bridge")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("-")[0])[:3])


def _dpkg_version(package: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return r.stdout.strip() or None if r.returncode == 0 else None


def prosody_version() -> str | None:
    """Never ``prosody --version``: on 0.12 that starts a server with the system config."""
    for f in ("/usr/lib/prosody/prosody.version", "/usr/local/lib/prosody/prosody.version"):
        if os.path.exists(f):
            return Path(f).read_text().strip()
    return _dpkg_version("prosody")


def ejabberd_version() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app")
                   + glob.glob("/opt/ejabberd*/lib/ejabberd-*/ebin/ejabberd.app"))
    for app in reversed(found):
        m = re.search(r'\{vsn,\s*"([^"]+)"', Path(app).read_text(errors="replace"))
        if m:
            return m.group(1)
    return _dpkg_version("ejabberd")


def otp_version() -> str | None:
    """The Erlang/OTP release ejabberd runs on (``/usr/lib/erlang/releases/N/OTP_VERSION``)."""
    found = sorted(glob.glob("/usr/lib/erlang/releases/*/OTP_VERSION"), key=_version_tuple)
    return Path(found[-1]).read_text().strip() if found else None


# --- Prosody ----------------------------------------------------------------------------------

_DUMP_LUA = r"""
local cfg_path, libdir = arg[1], arg[2]
package.path = libdir .. "/?.lua;" .. package.path
package.cpath = libdir .. "/?.so;" .. package.cpath
-- Prosody 13 requires "prosody.util.*": its loader maps those names onto libdir, as prosodyctl does
if not pcall(require, "prosody.loader") then pcall(require, "loader") end
prosody = { paths = {}, events = { fire_event = function() end } }
local cm = require "core.configmanager"
local ok, level, err = cm.load(cfg_path)
if not ok then
  io.stdout:write("ERROR\t", tostring(level), "\t", (tostring(err):gsub("[\t\n]", " ")), "\n"); os.exit(0)
end
for host, opts in pairs(cm.getconfig()) do
  for k, v in pairs(opts) do
    if type(v) == "table" then
      local items = {}
      for _, x in ipairs(v) do items[#items + 1] = tostring(x) end
      io.stdout:write("L\t", host, "\t", k, "\t", table.concat(items, "\1"), "\n")
    elseif type(v) ~= "function" then
      io.stdout:write("S\t", host, "\t", k, "\t", (tostring(v):gsub("[\t\n]", " ")), "\n")
    end
  end
end
"""


class ProsodyConfigError(Exception):
    pass


def read_prosody_config(path: Path, libdir: str = "/usr/lib/prosody") -> dict[str, dict[str, object]]:
    """host ("*" = global) -> option -> str or list[str], as Prosody's own configmanager reads
    ``path`` (``Include`` files and all)."""
    lua = shutil.which("lua5.4") or shutil.which("lua")
    if lua is None or not os.path.isdir(libdir):
        raise ProsodyConfigError("Prosody's Lua libraries are not installed (apt-get install prosody lua5.4)")
    r = subprocess.run([lua, "-", str(path), libdir], input=_DUMP_LUA, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise ProsodyConfigError(f"could not read {path}: {r.stderr.strip()}")
    out: dict[str, dict[str, object]] = {}
    for line in r.stdout.splitlines():
        kind, *rest = line.split("\t")
        if kind == "ERROR":
            raise ProsodyConfigError(f"{path}: {' '.join(rest)}")
        if len(rest) != 3:
            continue
        host, key, value = rest
        out.setdefault(host, {})[key] = [v for v in value.split("\1") if v] if kind == "L" else value
    return out


def _conf_d(path: Path) -> Path | None:
    """The directory an ``Include "conf.d/*.cfg.lua"`` in the main config reads, if any."""
    text = path.read_text(errors="replace")
    for m in re.finditer(r'^\s*Include\s*\(?\s*["\']([^"\']+)["\']', text, re.M):
        pattern = Path(m.group(1))
        if not pattern.is_absolute():
            pattern = path.parent / pattern
        if pattern.name.endswith(".cfg.lua") and "*" in pattern.name:
            return pattern.parent
    return None


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pick_host(args: argparse.Namespace, hosts: list[str], report: Report) -> str | None:
    if args.host:
        if hosts and args.host not in hosts:
            report.errors.append(f"{args.host} is not a host of this server (hosts: {', '.join(hosts) or 'none'})")
            return None
        return str(args.host)
    real = [h for h in hosts if h != "localhost"] or hosts
    if len(real) == 1:
        return real[0]
    report.errors.append(f"pass --host (this server has {', '.join(hosts) or 'no hosts'})")
    return None


def prosody_release_notes(version: tuple[int, ...], enabled: set[str], opts: dict[str, object]) -> list[str]:
    """What setup leaves as it is, and why, where Prosody's releases differ (R9.12: Debian 12's
    0.12.3, Debian 13's 13.0)."""
    notes = []
    core = version >= (13,)
    where = "a core module in Prosody 13" if core else "from prosody-modules on Prosody 0.12"
    if "cloud_notify" in enabled:
        notes.append(f'"cloud_notify" (XEP-0357 push, {where}) stays enabled: while the user is active on one '
                     f"device, the bridge keeps alerting pushes from the others (R3.6)")
    else:
        notes.append(f'no "cloud_notify" in modules_enabled: phones that wait for XEP-0357 pushes get none; MDM '
                     f"works without it ({where}; Debian 13's default config enables it)")
    bounce = opts.get("bounce_blocked_messages")
    if bounce is not None:
        notes.append(f"bounce_blocked_messages = {bounce} (yours, left as it is): the bridge only sees what "
                     f"mod_blocklist lets through (R2.6)")
    elif version >= (0, 12, 5):
        notes.append("bounce_blocked_messages is not set: this Prosody drops a blocked contact's messages without "
                     "an error (0.12.3 bounced them); no device gets them either way (R2.6). Setup leaves it: set "
                     "it to true for the old behaviour")
    if core and str(opts.get("run_as_root", "")).lower() == "true":
        notes.append("run_as_root = true: Prosody 13 starts as root only with it; Debian's systemd unit runs it as "
                     "prosody, which is all the bridge needs")
    return notes


def check_prosody(args: argparse.Namespace) -> int:
    cfg_path = Path(args.config or "/etc/prosody/prosody.cfg.lua")
    report = Report()
    print(f"Prosody: {cfg_path}")
    version = prosody_version()
    if version is None:
        report.errors.append("Prosody is not installed (apt-get install prosody)")
    elif _version_tuple(version) < PROSODY_MIN:
        report.errors.append(f"Prosody {version}: the bridge needs 0.12 or newer")
    else:
        report.notes.append(f"Prosody {version}")
    try:
        conf = read_prosody_config(cfg_path)
    except (ProsodyConfigError, OSError, subprocess.SubprocessError) as e:
        report.errors.append(str(e))
        report.print()
        return 1
    glob_opts = conf.get("*", {})
    vhosts = sorted(h for h, o in conf.items() if h != "*" and "component_module" not in o and o.get("defined"))
    host = _pick_host(args, vhosts, report)
    if host is None:
        report.print()
        return 1
    hopts = conf.get(host, {})
    comp_jid = str(args.component or hopts.get("mdm_component") or f"mdm.{host}")
    copts = conf.get(comp_jid, {})

    global_mods = list(glob_opts.get("modules_enabled", []) or [])  # type: ignore[arg-type]
    host_mods = hopts.get("modules_enabled")
    # a host list of its own replaces nothing of ours only if it is the one mdm.cfg.lua adds
    own_host_list = host_mods is not None and host_mods != global_mods and host_mods != ["mdm_bridge"]
    enabled = set(global_mods) | set(host_mods or [])  # type: ignore[arg-type]
    disabled = set(hopts.get("modules_disabled", []) or [])  # type: ignore[arg-type]
    for m, why in PROSODY_FIGHTING.items():
        if m in enabled and m not in disabled:
            report.errors.append(f'"{m}" is in modules_enabled: remove it, it {why}')
    for m in ("carbons", "csi_simple"):
        if m in enabled:
            report.notes.append(f'"{m}" stays enabled: the bridge loads it itself and lets it serve while the '
                                f"component is down (R9.10)")
    report.notes += prosody_release_notes(_version_tuple(version or "0"), enabled, glob_opts)
    plugin_paths = [str(p) for p in glob_opts.get("plugin_paths", []) or []]  # type: ignore[union-attr]
    modules_dir = Path(args.modules_dir or (plugin_paths[0] if plugin_paths else "/usr/local/lib/prosody/modules"))
    ours = bridge_dir("prosody")
    for p in plugin_paths:
        for cand in (Path(p) / "mod_mdm_bridge" / "mod_mdm_bridge.lua", Path(p) / "mod_mdm_bridge.lua"):
            if cand.exists() and cand != modules_dir / "mod_mdm_bridge" / "mod_mdm_bridge.lua" and \
                    cand.read_bytes() != (ours / "mod_mdm_bridge.lua").read_bytes():
                report.warnings.append(f"another mod_mdm_bridge on plugin_paths: {cand} (Prosody loads the first "
                                       f"one it finds: remove the old copy)")
    comp_port = args.component_port or _first_int(glob_opts.get("component_ports"), 5347)
    comp_iface = _first_str(glob_opts.get("component_interfaces"), "127.0.0.1")
    if comp_iface in ("*", "0.0.0.0", "::"):
        comp_iface = "127.0.0.1"
    toml_secret = _existing_secret(args)
    server_secret = str(copts.get("component_secret") or "")
    has_component = copts.get("component_module") == "component"
    conf_d = _conf_d(cfg_path)
    owned = conf_d is not None and (conf_d / "mdm.cfg.lua").exists() and \
        f"Component {_lua_str(comp_jid)}" in (conf_d / "mdm.cfg.lua").read_text(errors="replace")
    if toml_secret and server_secret and toml_secret != server_secret and not owned:
        report.errors.append(f"the component_secret of Component {comp_jid} differs from component.secret in "
                             f"{args.component_config}: make them equal")
    secret = toml_secret or server_secret or secrets.token_urlsafe(24)
    target = (conf_d / "mdm.cfg.lua") if conf_d else None

    lines = [f"-- open-mdm: written by mdm-component setup prosody ({__version__})",
             "-- keep \"carbons\" and \"csi_simple\": the bridge lets them serve while the component is down"]
    lines.append(f"VirtualHost {_lua_str(host)}")
    if not own_host_list:
        lines.append('    modules_enabled = { "mdm_bridge" } -- added to the global modules_enabled for this host')
    if comp_jid != f"mdm.{host}":
        lines.append(f"    mdm_component = {_lua_str(comp_jid)}")
    lines += ["", f"Component {_lua_str(comp_jid)}", f"    component_secret = {_lua_str(secret)}", ""]
    manual: list[str] = []
    if own_host_list and "mdm_bridge" not in enabled:
        manual.append(f'add "mdm_bridge" to the modules_enabled of VirtualHost "{host}" (it has its own list)')
    if str(modules_dir) not in plugin_paths:
        manual.append(f'add "{modules_dir}" to plugin_paths in {cfg_path} (global section)')
    if has_component and target is not None and not owned:
        # the Component block exists already (not from us): keep it, write only the host part
        lines = lines[:lines.index("")] + [""]
        report.notes.append(f"Component {comp_jid} is configured already (its secret is reused)")
    if "mdm_bridge" in enabled and has_component:
        report.notes.append(f'"mdm_bridge" is enabled for {host} and Component {comp_jid} exists')

    report.print()
    snippet = "\n".join(lines) + "\n"
    if args.write:
        if report.errors:
            print("setup: not writing anything until the errors above are fixed", file=sys.stderr)
            return 1
        _copy_tree(ours, modules_dir / "mod_mdm_bridge", mode=0o755)
        print(f"wrote {modules_dir / 'mod_mdm_bridge'}/ (the module, prosody-modules layout)")
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_private(target, snippet, group=_group_of(cfg_path))
            print(f"wrote {target}")
        else:
            manual.append(f"add to the end of {cfg_path}:\n{_indent(snippet)}")
        _write_component_side(args, comp_jid, secret, host, comp_iface, comp_port)
        for m in manual:
            print(f"  to do by hand: {m}")
        print("next:\n  prosodyctl check config\n  systemctl restart prosody\n"
              "  systemctl daemon-reload && systemctl enable --now mdm-component\n"
              f"  mdm-component doctor --config {args.component_config}")
        return 1 if manual and any("modules_enabled" in m for m in manual) else 0
    print("\nTo do (or run again with --write):")
    print(f"  1. copy the module: cp -rL {ours} {modules_dir}/")
    for m in manual:
        print(f"     and {m}")
    where = target or f"the end of {cfg_path}"
    print(f"  2. add to {where}:\n{_indent(snippet)}")
    print(f"  3. write {args.component_config} with component.jid = \"{comp_jid}\", the same secret, "
          f"server_port = {comp_port} (template: {package_file('data', 'mdm-component.example.toml')})")
    print("  4. systemctl restart prosody; start the component (systemd unit: "
          f"{package_file('data', 'mdm-component.service')}); mdm-component doctor --config {args.component_config}")
    return 1 if report.errors else 0


def _first_int(value: object, default: int) -> int:
    if isinstance(value, list) and value:
        value = value[0]
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _first_str(value: object, default: str) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else default
    return str(value) if value else default


def _indent(text: str) -> str:
    return "\n".join("      " + line if line else "" for line in text.splitlines())


# --- ejabberd ---------------------------------------------------------------------------------

def _ctl_settings(path: Path) -> dict[str, str]:
    """KEY=value lines of ejabberdctl.cfg (a shell file; only plain assignments)."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r'^\s*([A-Z_][A-Z0-9_]*)=(.*)$', line)
        if m:
            out[m.group(1)] = m.group(2).strip().strip('"').strip("'")
    return out


def _ejabberd_home() -> Path:
    try:
        return Path(pwd.getpwnam("ejabberd").pw_dir)
    except KeyError:
        return Path.home()


def check_ejabberd(args: argparse.Namespace) -> int:
    import yaml  # only here: the component itself does not need it

    cfg_path = Path(args.config or "/etc/ejabberd/ejabberd.yml")
    ctl_path = Path(args.ctl_config or cfg_path.parent / "ejabberdctl.cfg")
    report = Report()
    print(f"ejabberd: {cfg_path}")
    version = ejabberd_version()
    if version is None:
        report.errors.append("ejabberd is not installed (apt-get install ejabberd erlang-dev)")
    elif _version_tuple(version) < EJABBERD_MIN:
        report.errors.append(f"ejabberd {version}: the bridge needs 23.01 or newer")
    else:
        report.notes.append(f"ejabberd {version}")
    if shutil.which("erlc") is None:
        report.errors.append("erlc is missing: module_install compiles the bridge (apt-get install erlang-dev)")
    otp = otp_version()
    if otp:
        # R9.12: Debian 12 carries OTP 25, Debian 13 OTP 27; the bridge compiles on both
        report.notes.append(f"Erlang/OTP {otp}: ejabberdctl module_install compiles the bridge with it")
    try:
        conf = yaml.safe_load(cfg_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        report.errors.append(f"cannot read {cfg_path}: {e}")
        report.print()
        return 1
    hosts = [str(h) for h in conf.get("hosts", []) or []]
    host = _pick_host(args, hosts, report)
    if host is None:
        report.print()
        return 1
    comp_jid = str(args.component or f"mdm.{host}")
    modules = dict(conf.get("modules") or {})
    for m in EJABBERD_NEEDED:
        if m not in modules:
            report.errors.append(f"{m} is not under modules: in {cfg_path}: add \"{m}: {{}}\" (the bridge depends on "
                                 f"it: it serves users whenever the component does not, R9.10)")
        else:
            report.notes.append(f"{m} stays loaded: it serves while the component is down (R9.10)")
    if "mod_mdm_bridge" in modules:
        report.warnings.append(f"mod_mdm_bridge is configured in {cfg_path} as well: remove it there, its options "
                               f"belong in the module's conf/mod_mdm_bridge.yml (one module, one place)")
    if "mod_push_keepalive" in modules:
        report.notes.append("mod_push_keepalive (Debian's default) is fine beside the bridge")
    ctl = _ctl_settings(ctl_path)
    if re.search(r"-pa\s", ctl.get("ERL_OPTIONS", "")):
        for d in re.findall(r"-pa\s+(\S+)", ctl["ERL_OPTIONS"]):
            if (Path(d) / "mod_mdm_bridge.beam").exists():
                report.warnings.append(f"ERL_OPTIONS in {ctl_path} puts an old bridge on the code path ({d}): remove "
                                       f"that -pa, module_install keeps the module in ejabberd's own place")
    contrib = Path(args.contrib_dir or ctl.get("CONTRIB_MODULES_PATH") or _ejabberd_home() / ".ejabberd-modules")
    conf_dir = ctl.get("CONTRIB_MODULES_CONF_DIR")
    if conf_dir and (Path(conf_dir) / "mod_mdm_bridge.yml").exists():
        report.warnings.append(f"{conf_dir}/mod_mdm_bridge.yml exists: ejabberd reads it instead of the module's "
                               f"own conf/mod_mdm_bridge.yml")
    listener = None
    for entry in conf.get("listen", []) or []:
        if isinstance(entry, dict) and entry.get("module") == "ejabberd_service":
            for jid, opts in (entry.get("hosts") or {}).items():
                if jid == comp_jid:
                    listener = (entry, opts or {})
    installed = (contrib / "mod_mdm_bridge" / "ebin" / "mod_mdm_bridge.beam").exists()
    secret = _existing_secret(args)
    comp_port = args.component_port or 5347
    comp_ip = "127.0.0.1"
    if listener is not None:
        entry, opts = listener
        comp_port = int(entry.get("port", comp_port))
        comp_ip = str(entry.get("ip", comp_ip)) if entry.get("ip") not in (None, "::", "0.0.0.0") else "127.0.0.1"
        password = str(opts.get("password") or entry.get("password") or "")
        if secret and password and secret != password:
            report.errors.append(f"the listener's password for {comp_jid} in {cfg_path} differs from "
                                 f"component.secret in {args.component_config}: make them equal")
        secret = secret or password
        report.notes.append(f"the listener for {comp_jid} is in {cfg_path} already (port {comp_port})")
    secret = secret or secrets.token_urlsafe(24)
    yml = [f"# open-mdm: written by mdm-component setup ejabberd ({__version__})",
           "# ejabberd reads this file with its configuration once \"ejabberdctl module_install mod_mdm_bridge\" ran.",
           "# Keep mod_carboncopy and mod_client_state in ejabberd.yml: they serve while the component is down."]
    if listener is None:
        yml += ["listen:", f"  - port: {comp_port}", f'    ip: "{comp_ip}"', "    module: ejabberd_service",
                "    hosts:", f'      "{comp_jid}":', f'        password: "{secret}"']
    opts_line = "{}" if comp_jid == f"mdm.{host}" else f'{{component: "{comp_jid}"}}'
    yml += ["modules:", f"  mod_mdm_bridge: {opts_line}",
            "  # options: component (default \"mdm.<host>\"), ack_timeout (s, default 10), batch_size (100)"]
    snippet = "\n".join(yml) + "\n"
    report.print()
    sources = contrib / "sources" / "mod_mdm_bridge"
    install_cmd = "ejabberdctl module_upgrade mod_mdm_bridge" if installed else \
        "ejabberdctl module_install mod_mdm_bridge"
    if args.write:
        if report.errors:
            print("setup: not writing anything until the errors above are fixed", file=sys.stderr)
            return 1
        _copy_tree(bridge_dir("ejabberd"), sources, mode=0o750)
        (sources / "conf" / "mod_mdm_bridge.yml").write_text(snippet)
        os.chmod(sources / "conf" / "mod_mdm_bridge.yml", 0o640)
        _chown_tree(contrib, "ejabberd")
        print(f"wrote {sources}/ (ejabberd-contrib layout; conf/mod_mdm_bridge.yml has the listener and secret)")
        _write_component_side(args, comp_jid, secret, host, comp_ip, comp_port)
        print(f"next:\n  {install_cmd}\n  systemctl daemon-reload && systemctl enable --now mdm-component\n"
              f"  mdm-component doctor --config {args.component_config}")
        return 0
    print("\nTo do (or run again with --write):")
    print(f"  1. copy the module sources: cp -rL {bridge_dir('ejabberd')} {sources}; "
          f"chown -R ejabberd: {contrib}")
    print(f"  2. write {sources}/conf/mod_mdm_bridge.yml:\n{_indent(snippet)}")
    print(f"  3. {install_cmd}")
    print(f"  4. write {args.component_config} with component.jid = \"{comp_jid}\", the same secret, "
          f"server_port = {comp_port}; start the component; mdm-component doctor --config {args.component_config}")
    return 1 if report.errors else 0


# --- the component's side: its config, its state directory, its systemd unit ------------------

def _existing_secret(args: argparse.Namespace) -> str:
    path = Path(args.component_config)
    if not path.exists():
        return ""
    import tomllib
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    return str(data.get("component", {}).get("secret", ""))


def component_toml(jid: str, secret: str, host: str, server_host: str, server_port: int, state_dir: Path) -> str:
    text = package_file("data", "mdm-component.example.toml").read_text()
    subs = {
        "jid": f'"{jid}"', "secret": f'"{secret}"', "server_host": f'"{server_host}"',
        "server_port": str(server_port), "hosts": f'["{host}"]', "admins": f'["admin@{host}"]',
        "store": f'"{state_dir / "buffers.sqlite"}"', "directory": f'"{state_dir / "sessions.sqlite"}"',
    }
    for key, value in subs.items():
        text = re.sub(rf'^{key}\s*=\s*[^#\n]*?(\s*#|\s*$)', lambda m, k=key, v=value: f"{k} = {v}{m.group(1)}",
                      text, count=1, flags=re.M)
    return f"# written by mdm-component setup ({__version__}); every key: the package's " \
        f"data/mdm-component.example.toml\n" + text


def _write_component_side(args: argparse.Namespace, jid: str, secret: str, host: str,
                          server_host: str, server_port: int) -> None:
    path = Path(args.component_config)
    state = Path(args.state_dir)
    user = args.user
    _ensure_user(user)
    if path.exists():
        print(f"kept {path} (exists; its secret was used above)")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, component_toml(jid, secret, host, server_host, server_port, state), group=user)
        print(f"wrote {path}")
    state.mkdir(parents=True, exist_ok=True)
    _chown_tree(state, user)
    os.chmod(state, 0o750)
    unit_dir = Path(args.unit_dir)
    if str(unit_dir):
        unit_dir.mkdir(parents=True, exist_ok=True)
        exe = os.path.abspath(sys.argv[0]) if Path(sys.argv[0]).name == "mdm-component" else \
            f"{sys.executable} -m mdm.cli"
        unit = package_file("data", "mdm-component.service").read_text().replace("@MDM_COMPONENT@", exe)
        unit = unit.replace("/etc/mdm-component/mdm-component.toml", str(path))
        unit = re.sub(r"^User=.*$", f"User={user}", unit, flags=re.M)
        unit = re.sub(r"^Group=.*$", f"Group={_primary_group(user)}", unit, flags=re.M)
        (unit_dir / "mdm-component.service").write_text(unit)
        print(f"wrote {unit_dir / 'mdm-component.service'} (runs {exe} as {user})")


def _ensure_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        if os.geteuid() != 0:
            print(f"  to do by hand: create the system user {user}", file=sys.stderr)
            return
        subprocess.run(["useradd", "--system", "--home-dir", "/var/lib/mdm-component", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", user], check=True)
        print(f"created the system user {user}")


def _primary_group(user: str) -> str:
    import grp
    try:
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        return user


def _group_of(path: Path) -> str | None:
    import grp
    try:
        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return None


def _write_private(path: Path, text: str, group: str | None) -> None:
    """A file with a secret: 0640, readable by ``group`` (the server's or the component's)."""
    path.write_text(text)
    os.chmod(path, 0o640)
    if group and os.geteuid() == 0:
        import grp
        try:
            os.chown(path, 0, grp.getgrnam(group).gr_gid)
        except KeyError:
            with contextlib.suppress(KeyError):
                os.chown(path, 0, pwd.getpwnam(group).pw_gid)


def _copy_tree(src: Path, dest: Path, mode: int) -> None:
    """The module folder, links resolved (the package's layout folders link to the sources)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest, symlinks=False, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for root, _dirs, files in os.walk(dest):
        os.chmod(root, mode)
        for f in files:
            os.chmod(os.path.join(root, f), mode & 0o644 | 0o400)


def _chown_tree(path: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return
    for root, _dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", choices=("prosody", "ejabberd"))
    parser.add_argument("--host", help="the XMPP domain to serve (default: the server's only host)")
    parser.add_argument("--component", help="the component's JID (default: mdm.<host>)")
    parser.add_argument("--config", help="the server's config (default: /etc/prosody/prosody.cfg.lua, "
                                         "/etc/ejabberd/ejabberd.yml)")
    parser.add_argument("--write", action="store_true", help="write the files instead of printing what to do")
    parser.add_argument("--component-config", default="/etc/mdm-component/mdm-component.toml",
                        help="the component's config to write or check (default: %(default)s)")
    parser.add_argument("--component-port", type=int, help="the server's component port (default: from its "
                                                           "config, else 5347)")
    parser.add_argument("--state-dir", default="/var/lib/mdm-component",
                        help="the component's data directory (default: %(default)s)")
    parser.add_argument("--user", default="mdm-component", help="the user the component runs as (default: %(default)s)")
    parser.add_argument("--unit-dir", default="/etc/systemd/system",
                        help="where to write mdm-component.service; '' for none (default: %(default)s)")
    parser.add_argument("--modules-dir", help="Prosody: where the module folder goes (default: the first "
                                              "plugin_paths entry)")
    parser.add_argument("--ctl-config", help="ejabberd: ejabberdctl.cfg (default: beside ejabberd.yml)")
    parser.add_argument("--contrib-dir", help="ejabberd: the contrib modules dir (default: CONTRIB_MODULES_PATH, "
                                              "else ~ejabberd/.ejabberd-modules)")


def run(args: argparse.Namespace) -> int:
    return check_prosody(args) if args.server == "prosody" else check_ejabberd(args)
