"""What every server backend provides, and the factory that picks one by name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from ..profiles import ServerProfile
from ..waiting import poll_until
from .kinds import SERVER_KINDS, family, kind_of

log = logging.getLogger(__name__)

# Server features a run may ask for (issue 11, R3.6 / R5.7 / R9.5): XEP-0198 stream management
# with resumption, XEP-0357 push with the harness's push app server double (push.py), the direct
# TLS c2s port (XEP-0368), XMPP over WebSocket (RFC 7395) and PEP (XEP-0163, for XEP-0490 MDS).
FEATURES = ("stream-management", "push", "direct-tls", "websocket", "pep", "sasl2")


@dataclass(frozen=True)
class Account:
    user: str  # local part
    password: str


@dataclass
class ServerHandle:
    """A running server: where to connect, and how to stop it."""
    kind: str
    domain: str
    c2s_port: int
    component_port: int
    component_jid: str
    component_secret: str
    muc_domain: str
    workdir: Path
    pid: int | None = None
    log_file: Path | None = None
    accounts: list[Account] = field(default_factory=list)
    host: str = "127.0.0.1"
    # R9.5 other listeners, when the run asked for them (0 / "": not offered)
    direct_tls_port: int = 0  # XEP-0368 direct TLS c2s
    websocket_url: str = ""  # RFC 7395 XMPP over WebSocket
    # R3.6: the push app server double's JID (XEP-0357) and component port, when the run asked for push
    push_jid: str = ""
    push_port: int = 0

    def c2s_port_for(self, index: int) -> int:
        """Where the ``index``-th client connects: one port, or a cluster's nodes round-robin."""
        return self.c2s_port

    async def wait_session_closed(self, full_jid: str, timeout: float = 10.0) -> None:
        """Until the server has ended the session of ``full_jid`` (a barrier after a client
        disconnects). Prosody ends it while reading the client's close, before anything the
        harness sends next: nothing to wait for there."""

    def log_tail(self, lines: int = 30) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM by pid, SIGKILL after 10 s: nothing stays behind."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        await stop_pid(pid, f"{self.kind} server")


async def reap(pid: int, timeout: float = 10.0) -> bool:
    """Wait, without blocking the loop, until our child ``pid`` has exited; False on timeout."""
    for _ in range(int(timeout / 0.05)):
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done == pid:
            return True
        await asyncio.sleep(0.05)
    return False


async def stop_pid(pid: int, name: str) -> None:
    """SIGTERM, then SIGKILL after 10 s: a process we started stops, whatever it is doing."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        if await reap(pid):
            return
        log.warning("%s (pid %s) did not stop after SIGTERM; killing it", name, pid)
        os.kill(pid, signal.SIGKILL)
        await reap(pid)


async def wait_listening(port: int, proc: asyncio.subprocess.Process, name: str, log_file: Path,
                         timeout: float = 20.0) -> None:
    """Until the server accepts connections on ``port``; a clear error if it exits first."""
    async def accepts() -> bool:
        if proc.returncode is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_file}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        w.close()
        return True
    await poll_until(accepts, timeout, f"{name} did not listen on {port} within {timeout}s; see {log_file}", 0.05)


def plugin_dir() -> Path:
    """plugin/ of the checkout (the mdm package is installed editable from it): the bridges."""
    import mdm
    return Path(mdm.__file__).resolve().parents[1]




def server_option(argv: list[str], default: str = "prosody") -> tuple[str, list[str]]:
    """``[--server KIND] REST…`` as the benchmarks take it: the server kind and the rest."""
    kind, rest = default, list(argv)
    if rest[:1] == ["--server"] and len(rest) > 1:
        kind, rest = rest[1], rest[2:]
    try:
        kind_of(kind)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return kind, rest


def login_option(argv: list[str]) -> tuple[str, list[str]]:
    """``[--login classic|bind2] REST…`` (R9.11): how a benchmark's phone logs in, and the rest."""
    from ..streamclient import LOGINS
    kind, rest = "classic", list(argv)
    if rest[:1] == ["--login"] and len(rest) > 1:
        kind, rest = rest[1], rest[2:]
    if kind not in LOGINS:
        raise SystemExit(f"unknown login {kind!r} (available: {', '.join(LOGINS)})")
    return kind, rest


# Modules by role, for code that runs against either server (benchmarks, baselines), by family.
_MODULES = {
    "prosody": {"archive": "mam", "csi_queue": ("csi", "csi_simple")},
    "ejabberd": {"archive": "mod_mam", "csi_queue": ("mod_client_state",)},
}
MODULES = {name: _MODULES[family(name)] for name in SERVER_KINDS}


def cluster_nodes() -> int:
    """How many nodes ``ejabberd-cluster`` starts: ``MDM_CLUSTER_NODES``, 2 by default."""
    raw = os.environ.get("MDM_CLUSTER_NODES", "2")
    if not raw.isdigit() or int(raw) < 2:
        raise ValueError(f"MDM_CLUSTER_NODES must be a whole number of at least 2, got {raw!r}")
    return int(raw)


async def start_server(kind: str, accounts: list[Account], workdir: Path, *,
                       bridge_ack_timeout: float = 2.0, bridge: bool = True,
                       extra_modules: tuple[str, ...] = (), without_modules: tuple[str, ...] = (),
                       profile: ServerProfile | None = None, features: tuple[str, ...] = (),
                       hibernation_timeout: int | None = None) -> ServerHandle:
    """``bridge_ack_timeout``: seconds before the bridge delivers an unanswered message natively
    (short by default, so fail-open scenarios stay quick). ``bridge=False`` is the baseline: the
    server's own carbons instead of the bridge. Module names are the server's own (MODULES).
    ``profile``: extra modules, options and components (profiles.py; Prosody only for now).
    ``features`` (FEATURES): what phones and remote clients need, e.g. stream management and push
    (issue 11); the plain listener stays as it is."""
    options = dict(ack_timeout=bridge_ack_timeout, bridge=bridge, extra_modules=extra_modules,
                   without_modules=without_modules)
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown server feature(s) {', '.join(sorted(unknown))} (known: {', '.join(FEATURES)})")
    if features:
        options["features"] = tuple(features)
    if hibernation_timeout is not None:  # R5.7/R5.4: seconds a hibernated XEP-0198 session is kept
        options["hibernation_timeout"] = hibernation_timeout
    if profile is not None and not profile.empty:
        if family(kind) != "prosody":
            raise ValueError(f"server profile {profile.name!r}: profiles are rendered for Prosody only, not {kind}")
        options["profile"] = profile
    server = kind_of(kind)
    if server.docker:  # R9.12: the image of the kind's Debian release
        from .docker import start_docker_ejabberd, start_docker_prosody
        start = start_docker_prosody if server.family == "prosody" else start_docker_ejabberd
        return await start(accounts, workdir, release=server.release, **options)
    if server.cluster:
        from .ejabberd_cluster import start_ejabberd_cluster
        # R9.8: 2 nodes unless MDM_CLUSTER_NODES (mdm-harness --cluster-nodes) says more
        return await start_ejabberd_cluster(accounts, workdir, nodes=cluster_nodes(), **options)
    if server.family == "prosody":
        from .prosody import start_prosody
        return await start_prosody(accounts, workdir, **options)
    from .ejabberd import start_ejabberd
    return await start_ejabberd(accounts, workdir, **options)
