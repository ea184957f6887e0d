"""Start-up checks: what would otherwise pass ``--check`` and then end the component with a
traceback. Each failure is one line that names the config key and the cause (issue 10, item 5).

* :func:`check_paths` (``--check`` runs it too): the SQLite files of ``buffer.store`` and
  ``report.directory`` can be created or written: the directory exists, is a directory, and this
  user may write there.
* :func:`check_services` (at start; ``--check`` too, except the ports, which a running instance
  of the same config holds): the ``metrics.port`` and ``admin.port`` can be bound, and every
  PostgreSQL in the config (``buffer.store``, ``report.directory``, ``ha.lock``) answers.

Only the start is checked here: a PostgreSQL that goes away later is the running component's
business (it logs and retries; MDM delivery does not depend on the directory).
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .config import Config


@dataclass(frozen=True)
class Problem:
    key: str
    cause: str

    def __str__(self) -> str:
        return f"{self.key}: {self.cause}"


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _check_file(key: str, location: str) -> Problem | None:
    path = Path(location)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return Problem(key, f"{path} is a directory, not a file")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return Problem(key, f"{path} is not writable by user {_user()}")
        return None
    if not parent.exists():
        return Problem(key, f"directory {parent} does not exist (create it for user {_user()}, "
                            f"e.g. install -d {parent})")
    if not parent.is_dir():
        return Problem(key, f"{parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        return Problem(key, f"directory {parent} is not writable by user {_user()}")
    return None


def check_paths(cfg: Config) -> list[Problem]:
    problems = []
    for key, location in (("buffer.store", cfg.store_path), ("report.directory", cfg.directory)):
        if location and not is_postgres(location):
            p = _check_file(key, location)
            # report.directory defaults to a file beside the store: one line for one missing directory
            if p is not None and all(p.cause != q.cause for q in problems):
                problems.append(p)
    return problems


def _check_port(key: str, bind: str, port: int) -> Problem | None:
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return Problem(key, f"cannot listen on {bind}:{port}: {e.strerror}")
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            try:
                s.bind(address)
            except OSError as e:
                why = "already in use (another process listens there)" if e.errno == errno.EADDRINUSE \
                    else (e.strerror or str(e))
                return Problem(key, f"cannot listen on {bind}:{port}: {why}")
    return None


def _postgres_locations(cfg: Config) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out = []
    for key, url in (("buffer.store", cfg.store_path), ("report.directory", cfg.directory),
                     ("ha.lock", getattr(cfg, "ha_lock", ""))):
        if url and is_postgres(url) and url not in seen:
            seen.add(url)
            out.append((key, url))
    return out


async def _check_postgres(key: str, url: str, timeout: float) -> Problem | None:
    try:
        import asyncpg
    except ImportError:
        return Problem(key, "a postgresql:// location needs the asyncpg package (pip install asyncpg)")
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url), timeout)
    except TimeoutError:
        return Problem(key, f"PostgreSQL at {redact(url)} did not answer within {timeout:g}s")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        cause = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).splitlines()[0]
        return Problem(key, f"cannot reach PostgreSQL at {redact(url)}: {cause}")
    await conn.close()
    return None


async def check_services(cfg: Config, *, ports: bool = True, timeout: float = 5.0) -> list[Problem]:
    problems: list[Problem] = []
    if ports:
        if cfg.metrics_port and cfg.metrics_port == cfg.admin_port:
            problems.append(Problem("admin.port", f"{cfg.admin_port} is metrics.port as well"))
        for key, bind, port in (("metrics.port", cfg.metrics_bind, cfg.metrics_port),
                                ("admin.port", cfg.admin_bind, cfg.admin_port)):
            if port:
                p = _check_port(key, bind, port)
                if p is not None:
                    problems.append(p)
    for p in await asyncio.gather(*(_check_postgres(key, url, timeout) for key, url in _postgres_locations(cfg))):
        if p is not None:
            problems.append(p)
    return problems
