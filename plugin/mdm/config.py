"""The component's TOML configuration: defaults in plain sight, every bad value a one-line error
that names its key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .capacity import CapacityConfig
from .core import CoreConfig


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    jid: str = "mdm.localhost"
    secret: str = ""
    server_host: str = "127.0.0.1"
    server_port: int = 5347
    hosts: list[str] = field(default_factory=list)  # XMPP domains whose bridges may talk to us
    max_stanza_size: int = 1 << 20
    admins: list[str] = field(default_factory=list)  # bare JIDs allowed to run our ad-hoc commands
    core: CoreConfig = field(default_factory=CoreConfig)
    store_path: str = "mdm-buffers.sqlite"  # R5.4: held stanzas survive a restart
    metrics_bind: str = "127.0.0.1"
    metrics_port: int = 9107  # 0: no HTTP /metrics
    log_level: str = "info"
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    check_interval: float = 5.0  # seconds between capacity checks (R7.4)
    node: str = "node1"  # this component's node in the session report (R8.1)
    redundancy_group: str = "group1"
    sub_cluster: str = "default"
    cluster: str = "cluster"
    directory: str = ""  # a SQLite file (default: beside the buffer store), or postgresql://… shared by the nodes
    publish_interval: float = 10.0
    admin_bind: str = "127.0.0.1"
    admin_port: int = 0  # 0: no admin page
    admin_token: str = ""
    # R9.9: more server addresses ("host:port"), tried in turn; empty: server_host:server_port
    servers: list[str] = field(default_factory=list)
    ha_lock: str = ""  # postgresql:// URL of the active/standby lock; default: buffer.store if PostgreSQL
    ha_heartbeat: float = 1.0  # seconds between checks of the lock's connection (fencing)

    def server_addresses(self) -> list[tuple[str, int]]:
        """Where to connect, in order of preference (R9.9: any node of a cluster will do)."""
        if not self.servers:
            return [(self.server_host, self.server_port)]
        return [parse_address(a) for a in self.servers]

    def __post_init__(self) -> None:
        if not self.hosts and "." in self.jid:
            self.hosts = [self.jid.split(".", 1)[1]]  # mdm.example.org serves example.org


# key -> (attribute path, type check, description of a valid value)
_SCHEMA: dict[str, dict[str, tuple[str, Any, str]]] = {
    "component": {
        "jid": ("jid", str, "a domain JID such as mdm.example.org"),
        "secret": ("secret", str, "the shared secret of the server's component entry"),
        "server_host": ("server_host", str, "a host name or address"),
        "server_port": ("server_port", int, "a TCP port (1-65535)"),
        "hosts": ("hosts", list, "a list of XMPP domains"),
        "max_stanza_size": ("max_stanza_size", int, "a size in bytes (>= 4096)"),
        "admins": ("admins", list, "a list of bare JIDs"),
        "servers": ("servers", list, 'a list of "host:port" addresses, e.g. ["127.0.0.1:5347"]'),
    },
    "mdm": {
        "enabled": ("core.enabled", bool, "true or false"),
        "active_window": ("core.active_window", (int, float), "a number of seconds (> 0)"),
    },
    "buffer": {
        "per_client_limit": ("core.buffer_limit", int, "a number of stanzas (>= 1)"),
        "total_limit": ("core.total_buffer_limit", int, "a number of stanzas (>= 1)"),
        "store": ("store_path", str, "a file path for the SQLite store, or a postgresql:// URL (HA pair)"),
    },
    "metrics": {
        "bind": ("metrics_bind", str, "an address to listen on, e.g. 127.0.0.1"),
        "port": ("metrics_port", int, "a TCP port, or 0 for none"),
        "period": ("core.counter_period", (int, float), "a number of seconds (> 0)"),
    },
    "log": {
        "level": ("log_level", str, "one of debug, info, warning, error"),
    },
    "capacity": {
        "enabled": ("capacity.enabled", bool, "true or false"),
        "sized_users": ("capacity.sized_users", int, "the node's sized user count, e.g. 5000, 15000, 25000"),
        "ha_pair": ("capacity.ha_pair", bool, "true or false (active-active pair: half the capacity)"),
        "threshold": ("capacity.threshold", (int, float), "a share of the capacity between 0 and 1"),
        "duration": ("capacity.duration", (int, float), "a number of seconds (>= 0)"),
        "repeat": ("capacity.repeat", (int, float), "a number of seconds (> 0)"),
        "hybrid_users": ("capacity.hybrid_users", list, "a list of bare JIDs"),
        "webhook": ("capacity.webhook", str, "an http:// or https:// URL, or empty"),
        "check_interval": ("check_interval", (int, float), "a number of seconds (> 0)"),
    },
    "report": {
        "node": ("node", str, "this node's name"),
        "redundancy_group": ("redundancy_group", str, "a name"),
        "sub_cluster": ("sub_cluster", str, "a name"),
        "cluster": ("cluster", str, "a name"),
        "directory": ("directory", str, "a SQLite file path or a postgresql:// URL"),
        "publish_interval": ("publish_interval", (int, float), "a number of seconds (> 0)"),
    },
    "ha": {  # R9.9: one active instance, standbys that take over
        "lock": ("ha_lock", str, "a postgresql:// URL (default: buffer.store when it is PostgreSQL)"),
        "heartbeat": ("ha_heartbeat", (int, float), "a number of seconds (> 0)"),
    },
    "admin": {
        "bind": ("admin_bind", str, "an address to listen on, e.g. 127.0.0.1"),
        "port": ("admin_port", int, "a TCP port, or 0 for no admin page"),
        "token": ("admin_token", str, "a secret of at least 16 characters"),
    },
}


# R1.2: the keys a reload (SIGHUP) applies live: everything the core reads. Every other key
# needs a restart.
LIVE_KEYS: dict[str, str] = {f"{section}.{key}": attr for section, keys in _SCHEMA.items()
                             for key, (attr, _typ, _what) in keys.items() if attr.startswith("core.")}


def live_values(cfg: Config) -> dict[str, Any]:
    """The live keys' values, by key (``{"mdm.enabled": True, ...}``): what the admin API shows."""
    return {key: value_at(cfg, attr) for key, attr in LIVE_KEYS.items()}


def value_at(cfg: Config, path: str) -> Any:
    """The value at an attribute path of the schema, e.g. ``core.enabled``."""
    obj: Any = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(cfg: Config, path: str, value: Any) -> None:
    obj: Any = cfg
    *parents, last = path.split(".")
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, last, value)


def from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    cfg.hosts = []
    for section, values in data.items():
        schema = _SCHEMA.get(section)
        if schema is None:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(_SCHEMA)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{section} must be a table")
        for key, value in values.items():
            if key not in schema:
                raise ConfigError(f"unknown key {section}.{key} (known: {', '.join(schema)})")
            path, typ, what = schema[key]
            if isinstance(value, bool) and typ is not bool or not isinstance(value, typ):
                raise ConfigError(f"{section}.{key} must be {what}, got {value!r}")
            _set(cfg, path, value)
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    def bad(key: str, what: str, value: Any) -> ConfigError:
        return ConfigError(f"{key} must be {what}, got {value!r}")

    if not cfg.jid or "@" in cfg.jid or "/" in cfg.jid:
        raise bad("component.jid", "a domain JID such as mdm.example.org", cfg.jid)
    if not cfg.secret:
        raise ConfigError("component.secret is required (the server's component password)")
    if not 0 < cfg.server_port < 65536:
        raise bad("component.server_port", "a TCP port (1-65535)", cfg.server_port)
    if cfg.max_stanza_size < 4096:
        raise bad("component.max_stanza_size", "a size in bytes (>= 4096)", cfg.max_stanza_size)
    if not all(isinstance(h, str) and h for h in cfg.hosts):
        raise bad("component.hosts", "a list of XMPP domains", cfg.hosts)
    if not cfg.hosts:
        cfg.__post_init__()
    if not cfg.core.active_window > 0:
        raise bad("mdm.active_window", "a number of seconds (> 0)", cfg.core.active_window)
    cfg.core.active_window = float(cfg.core.active_window)
    if cfg.core.buffer_limit < 1:
        raise bad("buffer.per_client_limit", "a number of stanzas (>= 1)", cfg.core.buffer_limit)
    if cfg.core.total_buffer_limit < 1:
        raise bad("buffer.total_limit", "a number of stanzas (>= 1)", cfg.core.total_buffer_limit)
    if not cfg.store_path:
        raise bad("buffer.store", "a file path for the SQLite store", cfg.store_path)
    if not 0 <= cfg.metrics_port < 65536:
        raise bad("metrics.port", "a TCP port, or 0 for none", cfg.metrics_port)
    if not cfg.core.counter_period > 0:
        raise bad("metrics.period", "a number of seconds (> 0)", cfg.core.counter_period)
    if not all(isinstance(a, str) and "@" in a and "/" not in a for a in cfg.admins):
        raise bad("component.admins", "a list of bare JIDs", cfg.admins)
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise bad("log.level", "one of debug, info, warning, error", cfg.log_level)
    cap = cfg.capacity
    if cap.sized_users < 1:
        raise bad("capacity.sized_users", "the node's sized user count, e.g. 5000, 15000, 25000", cap.sized_users)
    if not 0 < cap.threshold <= 1:
        raise bad("capacity.threshold", "a share of the capacity between 0 and 1", cap.threshold)
    if cap.duration < 0:
        raise bad("capacity.duration", "a number of seconds (>= 0)", cap.duration)
    if not cap.repeat > 0:
        raise bad("capacity.repeat", "a number of seconds (> 0)", cap.repeat)
    if not all(isinstance(u, str) and "@" in u and "/" not in u for u in cap.hybrid_users):
        raise bad("capacity.hybrid_users", "a list of bare JIDs", cap.hybrid_users)
    if cap.webhook and not cap.webhook.startswith(("http://", "https://")):
        raise bad("capacity.webhook", "an http:// or https:// URL, or empty", cap.webhook)
    if not cfg.check_interval > 0:
        raise bad("capacity.check_interval", "a number of seconds (> 0)", cfg.check_interval)
    if not cfg.node:
        raise bad("report.node", "this node's name", cfg.node)
    _validate_ha(cfg, bad)
    if not cfg.directory:
        cfg.directory = cfg.store_path if _is_postgres(cfg.store_path) else \
            str(Path(cfg.store_path).parent / "mdm-sessions.sqlite")
    if not cfg.publish_interval > 0:
        raise bad("report.publish_interval", "a number of seconds (> 0)", cfg.publish_interval)
    if not 0 <= cfg.admin_port < 65536:
        raise bad("admin.port", "a TCP port, or 0 for no admin page", cfg.admin_port)
    if cfg.admin_port and len(cfg.admin_token) < 16:
        raise ConfigError("admin.token must be a secret of at least 16 characters when admin.port is set")


def _is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError if it is not one."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(address)
    return host, int(port)


def _validate_ha(cfg: Config, bad: Any) -> None:
    """R9.9: server addresses, and the lock that keeps one instance active."""
    what = 'a list of "host:port" addresses, e.g. ["127.0.0.1:5347"]'
    if not all(isinstance(a, str) for a in cfg.servers):
        raise bad("component.servers", what, cfg.servers)
    try:
        cfg.server_addresses()
    except ValueError:
        raise bad("component.servers", what, cfg.servers) from None
    if not cfg.ha_heartbeat > 0:
        raise bad("ha.heartbeat", "a number of seconds (> 0)", cfg.ha_heartbeat)
    if not cfg.ha_lock and _is_postgres(cfg.store_path):
        cfg.ha_lock = cfg.store_path  # a shared store needs one writer: the lock is always on
    if cfg.ha_lock and not _is_postgres(cfg.ha_lock):
        raise bad("ha.lock", "a postgresql:// URL (default: buffer.store when it is PostgreSQL)", cfg.ha_lock)
    if cfg.ha_lock and not _is_postgres(cfg.store_path):
        raise ConfigError("ha.lock needs a shared buffer.store (a postgresql:// URL): the standby must "
                          "restore the held stanzas of the instance it replaces (R9.9)")


def load(path: str | Path) -> Config:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return from_dict(data)
