"""P4 scale (issue 15): at least 10,000 concurrent client sessions through the component.

5,000 users x 2 devices (raw clients: SASL PLAIN on plaintext loopback, carbons on, so every
device is an MDM client, and presence sent) log in to a real server started by the harness, in
steps (1k, 2k, 5k, 10k sessions by default). Printed at every step:
  * the server's RSS (VmRSS from /proc) stock (the server's own carbons, no bridge, no
    component) and with the bridge + the component, the same sessions in both runs;
  * the component's RSS (`mdm-component` as its own process) once it has every session;
  * the time from a component restart (SIGKILL, then a new process at once) to every session
    re-synchronised and MDM delivery back (R9.8 resync: the bridge sends <sync/> and every
    session on the handshake): a probe user's two devices both get an IM sent after the kill
    with the notification hint <notify xmlns='urn:x-open-mdm:notify:0'/>. The probe IMs (from
    an extra sender session, paced) cross the same link after the bridge's sync, so the first
    hinted one proves the component has taken in every session; the component's MDMSessions
    gauge is read after to confirm. Split at "process up" (the new process answers /metrics:
    interpreter start, imports, config), with the CPU the server and the component used before
    and after it. (/metrics is not polled after that: it walks every session, and the component
    answers it only between stanzas anyway.)
Issue 15's goal: resync <= 2 s at 10k sessions. Archive off (as the other ejabberd benches; on
Prosody too, so both servers are measured alike). The file-descriptor limit is raised in this
process (soft to hard), not in the system; the server inherits it.
Run: .venv/bin/python bench/scale.py [--server prosody|ejabberd] [--sessions 1000,2000,5000,10000]
       [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from latency import cpu_seconds
from rawclient import RawClient

from mdm_harness.faults import ComponentProcess, Endpoint, FaultBench
from mdm_harness.servers.base import MODULES, Account, ServerHandle, start_server

DEVICES = ("laptop", "mobile")
PROBE_RATE = 50.0  # probe IMs per second during a restart: "MDM back" to within 20 ms
SENDER = Account("sender", "sender-password")


def user(i: int) -> Account:
    return Account(f"u{i}", f"u{i}-password")


def rss_kib(pid: int | None) -> int:
    """VmRSS of ``pid`` from /proc (0 if it is gone)."""
    if pid is None:
        return 0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0


def open_files_limit(pid: int | None) -> str:
    """The soft "Max open files" of ``pid``: proof that the server inherited our limit."""
    try:
        limits = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return "?"
    m = re.search(r"^Max open files\s+(\S+)", limits, re.M)
    return m.group(1) if m else "?"


def raise_fd_limit(sessions: int) -> int:
    """P4: soft limit to the hard one, in this process only (the server child inherits it). Each
    session is one socket here and one in the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < sessions + 500:
        raise SystemExit(f"the hard file-descriptor limit ({hard}) is too low for {sessions} sessions")
    return hard


@dataclass
class Resync:
    """Seconds from the SIGKILL of the component to each stage of its comeback (R9.8), and the
    CPU seconds spent before and after the new process was up."""
    process_up: float  # the new process answers /metrics (interpreter start, imports, config)
    mdm_back: float  # both probe devices got an IM sent after the kill, with the hint
    mdm_sessions: float  # the component's MDMSessions gauge once MDM is back
    server_cpu_down: float  # kill -> up: the bridge back to stock carbons, fail-open
    server_cpu_sync: float  # up -> MDM back: handshake, the bridge's sync pass, the probes
    component_cpu_start: float  # the new process until it is up
    component_cpu_sync: float  # up -> MDM back: connecting, taking in the sync


@dataclass
class Step:
    sessions: int
    login_rate: float  # logins per second for this step's new sessions
    server_rss: int  # KiB
    component_rss: int = 0  # KiB, with every session synced (0: stock)
    resync: Resync | None = None


@dataclass
class Run:
    """One server (stock or with the bridge), grown step by step."""
    kind: str
    mdm: bool
    workdir: Path
    server: ServerHandle | None = None
    component: ComponentProcess | None = None
    probe: FaultBench | None = None
    clients: list[RawClient] = field(default_factory=list)
    users: int = 1  # u0 is the probe user (FaultBench's devices)

    async def start(self, max_users: int) -> None:
        # Archive off on both servers: the archive is not what P4 measures, and ejabberd's
        # Mnesia archive is no baseline (docs/benchmarks.md).
        accounts = [SENDER, *(user(i) for i in range(max_users))]
        self.server = await start_server(self.kind, accounts, self.workdir / "server", bridge=self.mdm,
                                         bridge_ack_timeout=10, without_modules=(MODULES[self.kind]["archive"],))
        if self.mdm:
            self.component = ComponentProcess.for_server(self.server, self.workdir, "mdm",
                                                         str(self.workdir / "buffers.sqlite"), log_level="warning")
            await self.component.start()
            await self.component.wait_metric("mdm_component_active", lambda v: v == 1, timeout=60)
        s = self.server

        def ep(a: Account, resource: str) -> Endpoint:
            return Endpoint(a.user, a.password, resource, s.host, s.c2s_port)
        self.probe = FaultBench(s.domain, ep(SENDER, "probe"), [ep(user(0), r) for r in DEVICES])
        await self.probe.connect()

    @property
    def sessions(self) -> int:
        """MDM client sessions (the sender, no carbons, is one more on the server)."""
        return self.users * len(DEVICES)

    async def grow(self, users: int, concurrency: int) -> float:
        """Log in users up to ``users`` (both devices each), ``concurrency`` logins at a time;
        returns logins per second."""
        assert self.server is not None
        new = [RawClient(a.user, a.password, r, self.server.domain)
               for a in (user(i) for i in range(self.users, users)) for r in DEVICES]
        gate = asyncio.Semaphore(concurrency)

        async def login(c: RawClient) -> None:
            async with gate:
                await c.connect(self.server.c2s_port)  # bind, carbons on, presence, ping
        started = time.monotonic()
        self.clients += new
        await asyncio.gather(*(login(c) for c in new))
        self.users = users
        return len(new) / max(time.monotonic() - started, 1e-9)

    async def synced(self, timeout: float = 120.0) -> None:
        """Until the component counts every device as an MDM client (the steady state)."""
        assert self.component is not None
        await self.component.wait_metric("MDMSessions", lambda v: v == self.sessions, timeout=timeout)

    async def restart(self) -> Resync:
        """SIGKILL the component, start a new process at once, time its comeback (R9.8)."""
        assert self.component is not None and self.probe is not None and self.server is not None
        comp, probe = self.component, self.probe
        cpu0 = cpu_seconds(self.server.pid)
        fault = probe.mark(f"SIGKILL at {self.sessions} sessions")
        await comp.kill()
        await comp.start()
        probe.start_traffic(PROBE_RATE)
        try:
            await comp.wait_metric("mdm_component_active", lambda v: True, timeout=120)
            up = time.monotonic()
            cpu_up = cpu_seconds(self.server.pid), cpu_seconds(comp.pid)
            await probe.wait_mdm_again(fault, timeout=300)
            back = time.monotonic()
        finally:
            await probe.stop_traffic()
        cpu_back = cpu_seconds(self.server.pid), cpu_seconds(comp.pid)
        got = await comp.metrics() or {}
        at = fault[1]  # time.monotonic() of the kill
        return Resync(up - at, back - at, got.get("MDMSessions", float("nan")), cpu_up[0] - cpu0,
                      cpu_back[0] - cpu_up[0], cpu_up[1], cpu_back[1] - cpu_up[1])

    async def close(self) -> None:
        if self.probe is not None:
            await self.probe.close()
        for c in self.clients:
            await c.close()
        if self.component is not None:
            await self.component.stop()
        if self.server is not None:
            await self.server.stop()
        if os.environ.get("MDM_KEEP"):  # the server's and the component's logs, as bench/failover.py
            print(f"  (kept {self.workdir})")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def mib(kib: int) -> str:
    return f"{kib / 1024:7.1f}"


async def measure(kind: str, mdm: bool, steps: list[int], concurrency: int) -> list[Step]:
    run = Run(kind, mdm, Path(tempfile.mkdtemp(prefix="p4-scale-", dir="/tmp")))
    out: list[Step] = []
    try:
        await run.start(steps[-1] // len(DEVICES))
        assert run.server is not None
        if not mdm:
            print(f"  (server pid {run.server.pid}: Max open files {open_files_limit(run.server.pid)})")
        for sessions in steps:
            rate = await run.grow(sessions // len(DEVICES), concurrency)
            if mdm:
                await run.synced()
            step = Step(run.sessions, rate, rss_kib(run.server.pid))
            if mdm:
                assert run.component is not None
                step.component_rss = rss_kib(run.component.pid)
                step.resync = await run.restart()
                await run.synced()  # the next step starts from the steady state
            print_step(step, mdm)
            out.append(step)
        if mdm and run.probe is not None:
            report = await run.probe.finish()
            lost = sum(t.lost for t in report.tallies)
            dup = sum(t.duplicated for t in report.tallies)
            print(f"  probe IMs to u0 across the {len(steps)} restarts: {report.sent} sent, each device "
                  f"lost {lost}, duplicated {dup} in total (fail-open while the component was away)")
        return out
    finally:
        await run.close()


def print_step(s: Step, mdm: bool) -> None:
    line = f"  {s.sessions:8} {s.login_rate:9.0f} {mib(s.server_rss)}"
    if mdm and s.resync is not None:
        r = s.resync
        line += (f"   {mib(s.component_rss)}   {r.process_up:6.2f} {r.mdm_back:6.2f}   {r.server_cpu_down:6.2f}"
                 f" {r.server_cpu_sync:6.2f}   {r.component_cpu_start:6.2f} {r.component_cpu_sync:6.2f}"
                 f"   {r.mdm_sessions:8.0f}")
    print(line, flush=True)


def header(mdm: bool) -> None:
    line = f"  {'sessions':>8} {'logins/s':>9} {'server':>7}"
    if mdm:
        line += (f"   {'comp.':>7}   {'s after SIGKILL':^13}   {'server CPU s':^13}   {'comp. CPU s':^13}"
                 f"   {'MDM':>8}")
        print(line)
        print(f"  {'':8} {'':9} {'RSS MiB':>7}   {'RSS MiB':>7}   {'up':>6} {'MDM':>6}   {'to up':>6} {'sync':>6}"
              f"   {'start':>6} {'sync':>6}   {'sessions':>8}")
        print("  (up: the new process answers /metrics; MDM: both probe devices got a hinted IM sent after the"
              " kill;\n   CPU s: kill to up, and up to MDM back; MDM sessions: the component's gauge after)")
    else:
        print(line)
        print(f"  {'':8} {'':9} {'RSS MiB':>7}")


def load() -> str:
    return Path("/proc/loadavg").read_text().strip()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="prosody", choices=("prosody", "ejabberd"))
    ap.add_argument("--sessions", default="1000,2000,5000,10000",
                    help="session counts to step through (2 devices per user)")
    ap.add_argument("--concurrency", type=int, default=100, help="logins in flight at a time")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # children the harness reaps itself
    steps = sorted(int(x) for x in args.sessions.split(","))
    if any(s % len(DEVICES) or s < 2 * len(DEVICES) for s in steps):
        raise SystemExit("--sessions: even numbers, at least 4 (two devices per user, u0 is the probe user)")
    limit = raise_fd_limit(steps[-1])
    kind = args.server
    print(f"load average at start: {load()}")
    print(f"{kind}, archive off, plaintext loopback; {steps[-1] // 2} users x 2 devices (carbons on, presence "
          f"sent) + 1 sender session; {args.concurrency} logins at a time; fd limit {limit} (raised in this process)")
    started = time.monotonic()
    baseline = "mod_carbons" if kind == "prosody" else "mod_carboncopy"
    print(f"\nstock: {kind} + {baseline}, no bridge, no component")
    header(False)
    stock = await measure(kind, False, steps, args.concurrency)
    print(f"\nMDM: {kind} + bridge + mdm-component (its own process); restart = SIGKILL, new process at once")
    header(True)
    mdm = await measure(kind, True, steps, args.concurrency)
    print(f"\nsummary ({time.monotonic() - started:.0f} s, load average {load()}):")
    first, last = (stock[0], mdm[0]), (stock[-1], mdm[-1])
    span = last[0].sessions - first[0].sessions
    for label, a, b in (("stock", first[0], last[0]), ("with bridge + component", first[1], last[1])):
        per = (b.server_rss - a.server_rss) / span if span else float("nan")
        print(f"  server RSS at {b.sessions} sessions, {label}: {b.server_rss / 1024:.1f} MiB "
              f"({per:.1f} KiB per session from {a.sessions} to {b.sessions})")
    c0, c1 = first[1].component_rss, last[1].component_rss
    print(f"  component RSS at {last[1].sessions} sessions: {c1 / 1024:.1f} MiB "
          f"({(c1 - c0) / span if span else float('nan'):.1f} KiB per session from {first[1].sessions})")
    times = ", ".join(f"{s.sessions} {s.resync.mdm_back:.2f} s" for s in mdm if s.resync)
    print(f"  SIGKILL to MDM back (every session resynced): {times} (goal <= 2 s at 10000)")


if __name__ == "__main__":
    asyncio.run(main())
