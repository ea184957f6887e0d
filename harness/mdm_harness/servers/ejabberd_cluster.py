"""A real ejabberd 23.01 cluster on loopback (R9.8): N nodes as ordinary processes, joined into
one Mnesia cluster with ejabberd's own ``join_cluster``, the MDM bridge loaded on every node.

Distributed Erlang needs epmd: we start our own in the foreground on a free port
(``ERL_EPMD_PORT``), as a child stopped by pid like the nodes, so nothing stays behind and two
runs never share one. Every node has its own spool, log and c2s / component / HTTP ports; the
node names are ``ej1@localhost`` … within this run's epmd, with a cookie only this run knows.

Clients are placed on the nodes round-robin (``c2s_port_for``): in a scenario with a laptop, a
mobile and a contact, the user's devices sit on different nodes and contacts on both, which is
what R9.8 is about. A scenario pins a client with ``node: 2`` in its ``[Client]`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from ..ports import free_ports
from .base import Account, ServerHandle, reap, stop_pid
from .ejabberd import DOMAIN, SECRET, EjabberdHandle, bridge_ebin, launch, render_config, wait_started
from .tls import self_signed

log = logging.getLogger(__name__)

DEFAULT_NODES = 2


@dataclass
class ClusterNode:
    name: str  # the Erlang node name, e.g. ej1@localhost
    c2s_port: int
    component_port: int
    http_port: int
    workdir: Path
    pid: int | None = None

    @property
    def log_file(self) -> Path:
        return self.workdir / "ejabberd.log"


@dataclass
class EjabberdClusterHandle(EjabberdHandle):
    nodes: list[ClusterNode] = field(default_factory=list)
    cookie: str = ""
    epmd_port: int = 0
    epmd_pid: int | None = None

    @property
    def c2s_ports(self) -> list[int]:
        return [n.c2s_port for n in self.nodes]

    @property
    def component_ports(self) -> list[int]:
        return [n.component_port for n in self.nodes]

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def c2s_port_for(self, index: int) -> int:
        return self.nodes[index % len(self.nodes)].c2s_port

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for n in self.nodes:
            if n.log_file.exists():
                tail = "\n".join(n.log_file.read_text(errors="replace").splitlines()[-lines:])
                parts.append(f"[{n.name}]\n{tail}")
        return "\n".join(parts)

    def env(self) -> dict[str, str]:
        return {"ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1"}

    async def kill_node(self, index: int) -> None:
        """SIGKILL one node, as a crash would (R9.9 fault tests): its sessions vanish without
        any unbind hook; the survivors' bridges notice through Erlang's node monitoring."""
        node = self.nodes[index]
        if node.pid is None:
            return
        pid, node.pid = node.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await reap(pid)

    async def stop(self) -> None:
        for n in self.nodes:
            if n.pid is not None:
                pid, n.pid = n.pid, None
                await stop_pid(pid, n.name)
        self.pid = None
        if self.epmd_pid is not None:
            pid, self.epmd_pid = self.epmd_pid, None
            await stop_pid(pid, "epmd")


async def _start_epmd(port: int, workdir: Path) -> asyncio.subprocess.Process:
    epmd = shutil.which("epmd")
    if epmd is None:
        raise RuntimeError("epmd is not installed (it comes with erlang-base: apt-get install ejabberd)")
    with open(workdir / "epmd.log", "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            epmd, "-address", "127.0.0.1", "-port", str(port), stdin=asyncio.subprocess.DEVNULL,
            stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    for _ in range(200):  # until it accepts connections
        if proc.returncode is not None:
            raise RuntimeError(f"epmd exited with {proc.returncode}; see {workdir / 'epmd.log'}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        w.close()
        return proc
    raise RuntimeError(f"epmd did not listen on {port}")


async def _control(handle: EjabberdClusterHandle, expr: str, timeout: float = 90.0) -> str:
    """Evaluate ``expr`` on a hidden control node of this cluster and return what it prints."""
    erl = shutil.which("erl")
    assert erl is not None
    name = f"ctl{secrets.token_hex(3)}@localhost"
    proc = await asyncio.create_subprocess_exec(
        erl, "-noinput", "-noshell", "-hidden", "-sname", name, "-setcookie", handle.cookie,
        "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
        "-eval", f"{expr}, halt().", env=dict(os.environ, **handle.env()),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"cluster control command timed out: {expr}") from None
    return out.decode(errors="replace").strip()


async def start_ejabberd_cluster(accounts: list[Account], workdir: Path, *, nodes: int = DEFAULT_NODES,
                                 bridge: bool = True, extra_modules: tuple[str, ...] = (),
                                 without_modules: tuple[str, ...] = (),
                                 ack_timeout: float = 2.0, features: tuple[str, ...] = (),
                                 hibernation_timeout: int | None = None) -> ServerHandle:
    if nodes < 2:
        raise ValueError("a cluster has at least 2 nodes")
    ebin = bridge_ebin() if bridge else None
    workdir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(3 * nodes + 1)
    level = "debug" if os.environ.get("MDM_HARNESS_DEBUG") else "info"
    members = []
    for i in range(nodes):
        c2s, comp, http = ports[3 * i: 3 * i + 3]
        d = workdir / f"node{i + 1}"
        d.mkdir(parents=True, exist_ok=True)
        members.append(ClusterNode(f"ej{i + 1}@localhost", c2s, comp, http, d))
    first = members[0]
    handle = EjabberdClusterHandle(
        "ejabberd-cluster", DOMAIN, first.c2s_port, first.component_port, "mdm." + DOMAIN, SECRET,
        "conference." + DOMAIN, workdir, None, first.log_file, list(accounts), http_port=first.http_port,
        nodes=members, cookie=secrets.token_hex(16), epmd_port=ports[-1])
    # issue 11: every node gets the modules a feature needs; the first node also the listeners a
    # test reaches one way (direct TLS, WebSocket, the push app server double's component port)
    direct_tls_port = free_ports(1)[0] if "direct-tls" in features else None
    push_port = free_ports(1)[0] if "push" in features else None
    tls_pem = None
    if direct_tls_port:
        cert, key = await self_signed(workdir)
        tls_pem = workdir / "localhost.pem"
        tls_pem.write_text(cert.read_text() + key.read_text())
        tls_pem.chmod(0o600)
    handle.direct_tls_port = direct_tls_port or 0
    handle.push_port = push_port or 0
    handle.push_jid = "push." + DOMAIN if push_port else ""
    handle.websocket_url = f"ws://127.0.0.1:{first.http_port}/ws" if "websocket" in features else ""
    try:
        epmd = await _start_epmd(handle.epmd_port, workdir)
        handle.epmd_pid = epmd.pid
        procs = []
        for n in members:
            cfg = n.workdir / "ejabberd.yml"
            lead = n is first
            cfg.write_text(render_config(n.c2s_port, n.component_port, n.http_port, bridge=bridge,
                                         extra_modules=extra_modules, without_modules=without_modules,
                                         log_level=level, ack_timeout=ack_timeout, features=features,
                                         direct_tls_port=direct_tls_port if lead else None,
                                         tls_pem=tls_pem, push_port=push_port if lead else None,
                                         hibernation_timeout=hibernation_timeout))
            dist = ["-sname", n.name, "-setcookie", handle.cookie,
                    "-kernel", "inet_dist_use_interface", "{127,0,0,1}"]
            proc = await launch(cfg, n.workdir, ebin, dist_args=dist, extra_env=handle.env())
            n.pid = proc.pid
            procs.append(proc)
        handle.pid = first.pid
        await asyncio.gather(*(wait_started(p, n.log_file) for p, n in zip(procs, members, strict=True)))
        # ejabberd's own join_cluster, run on each joining node; it returns once ejabberd has
        # restarted there with the cluster's tables.
        joins = ", ".join(f"rpc:call('{n.name}', ejabberd_admin, join_cluster, [<<\"{first.name}\">>], 60000)"
                          for n in members[1:])
        answer = await _control(handle, f"io:format(\"~p~n\", [[{joins}]])")
        if answer.strip("[]").replace("ok", "").strip(", ") or "ok" not in answer:
            raise RuntimeError(f"join_cluster failed: {answer}\n{handle.log_tail(15)}")
        check = f"io:format(\"~p~n\", [rpc:call('{first.name}', ejabberd_cluster, get_nodes, [])])"
        listed = await _control(handle, check)
        if any(n.name not in listed for n in members):
            raise RuntimeError(f"the cluster lists {listed}, expected {handle.node_names}")
        await handle.register(accounts)  # once: the cluster shares its accounts
    except BaseException:
        await handle.stop()
        raise
    log.debug("ejabberd cluster %s in %s", handle.node_names, workdir)
    return handle
