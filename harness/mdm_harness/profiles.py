"""Server profiles: extra modules, components and options for a run, so that scripts written for
another project's test server (Prosody's own ``spec/scansion`` expects mod_pep, vcard, uptime,
a pubsub component, HTTP upload, ``admins`` …) run without editing them.

A profile is a TOML file (``mdm-harness run --server-profile FILE``, or ``## server-profile: FILE``
in a scenario, relative to it); ``## server-modules: a, b`` adds modules from the scenario itself.
Several profiles merge: lists are joined, tables are updated, later wins::

    modules = ["pep", "vcard4", "uptime"]        # added to the server's modules_enabled
    disable = ["mam"]                            # taken out of the harness's default modules
    admins = ["admin@localhost"]
    http = true                                  # an HTTP listener on a free loopback port
    lua = "-- raw Lua put at the top of the generated config (Prosody only)"

    [options]                                    # global options
    contact_info = { abuse = ["mailto:abuse@localhost"] }

    [host]                                       # options of the VirtualHost
    hide_os_type = true

    [[component]]                                # a component: the name under the domain, or a JID
    name = "pubsub"                              #   -> pubsub.localhost
    module = "pubsub"
    options = { expose_publisher = true }

Values are written as Lua (strings, numbers, booleans, arrays, tables). Profiles are rendered
for Prosody; ejabberd takes no profile yet (a run with one fails with that message).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class ComponentSpec:
    name: str  # "pubsub" (under the domain) or a full JID "pubsub.example.org"
    module: str | None = None  # None: an external (XEP-0114) component
    options: dict[str, Any] = field(default_factory=dict)

    def jid(self, domain: str) -> str:
        return self.name if "." in self.name else f"{self.name}.{domain}"


@dataclass(frozen=True)
class ServerProfile:
    name: str = ""
    modules: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    http: bool = False
    lua: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    components: tuple[ComponentSpec, ...] = ()

    @property
    def empty(self) -> bool:
        return self == ServerProfile(name=self.name)

    @property
    def needs_http(self) -> bool:
        return self.http or any((c.module or "").startswith("http_") for c in self.components)

    def merged(self, other: ServerProfile) -> ServerProfile:
        """``self`` then ``other``: lists joined (no duplicates), tables updated, later wins."""
        def join(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(a + b))
        components = {c.name: c for c in self.components}
        for c in other.components:
            prev = components.get(c.name)
            components[c.name] = c if prev is None else replace(
                prev, module=c.module or prev.module, options={**prev.options, **c.options})
        return ServerProfile(
            name=" + ".join(n for n in (self.name, other.name) if n),
            modules=join(self.modules, other.modules), disable=join(self.disable, other.disable),
            admins=join(self.admins, other.admins), http=self.http or other.http,
            lua="\n".join(x for x in (self.lua, other.lua) if x),
            options={**self.options, **other.options}, host={**self.host, **other.host},
            components=tuple(components.values()))


_KEYS = {"modules", "disable", "admins", "http", "lua", "options", "host", "component"}


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{where}: expected a list of strings")
    return tuple(value)


def profile_from_dict(data: dict[str, Any], name: str = "") -> ServerProfile:
    unknown = set(data) - _KEYS
    if unknown:
        raise ProfileError(f"{name}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})")
    components = []
    for i, c in enumerate(data.get("component", [])):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise ProfileError(f"{name}: component #{i + 1} needs a name")
        extra = set(c) - {"name", "module", "options"}
        if extra:
            raise ProfileError(f"{name}: component {c['name']}: unknown key(s) {', '.join(sorted(extra))}")
        components.append(ComponentSpec(c["name"], c.get("module"), dict(c.get("options", {}))))
    for key in ("options", "host"):
        if not isinstance(data.get(key, {}), dict):
            raise ProfileError(f"{name}: [{key}] must be a table")
    if not isinstance(data.get("http", False), bool) or not isinstance(data.get("lua", ""), str):
        raise ProfileError(f"{name}: http is true/false and lua is a string")
    return ServerProfile(
        name=name, modules=_strings(data.get("modules", []), f"{name}: modules"),
        disable=_strings(data.get("disable", []), f"{name}: disable"),
        admins=_strings(data.get("admins", []), f"{name}: admins"), http=data.get("http", False),
        lua=data.get("lua", ""), options=dict(data.get("options", {})), host=dict(data.get("host", {})),
        components=tuple(components))


def load_profile(path: Path) -> ServerProfile:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ProfileError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: {e}") from None
    return profile_from_dict(data, path.name)


# --- Prosody -----------------------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lua_value(v: Any) -> str:
    """A TOML value as a Lua expression."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return lua_string(v)
    if isinstance(v, list):
        return "{ " + "; ".join(lua_value(x) for x in v) + " }"
    if isinstance(v, dict):
        items = (f"{k if _IDENT.match(k) else '[' + lua_string(k) + ']'} = {lua_value(x)}" for k, x in v.items())
        return "{ " + "; ".join(items) + " }"
    raise ProfileError(f"cannot write {type(v).__name__} {v!r} as Lua")


def lua_assignments(options: dict[str, Any], indent: str = "") -> str:
    for k in options:
        if not _IDENT.match(k):
            raise ProfileError(f"option name {k!r} is not a Lua identifier")
    return "".join(f"{indent}{k} = {lua_value(v)}\n" for k, v in options.items())
