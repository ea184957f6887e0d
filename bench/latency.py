"""P2 latency and CPU per IM (issue 15): a paced stream of IMs to a user with three devices, the
server's own carbons (stock) vs the MDM bridge + component, archive on and off, in one run.

Bob sends N IMs to alice@localhost at a steady RATE (default 5000 at 500 IM/s, after a short
warm-up); Alice has three devices (laptop, mobile, tablet) with carbons on and equal priority, so
natively all three are RFC 6121 recipients and with MDM all three are fanned out. Each IM's
latency is the time from Bob's write to a device reading it (one process, one clock). Printed per
setup: p50 / p99 / max per device, the number of stalls over 10 ms, and the CPU per IM of the
server process (and of the component and, with ejabberd's SQL archive, of PostgreSQL), read from
/proc over the paced window. Ratios and differences are against the stock setup of the same run.

Setups: stock = the server's own XEP-0280 plus its CSI module (Prosody mod_carbons + mod_csi +
mod_csi_simple, ejabberd mod_carboncopy + mod_client_state), no bridge; MDM = the bridge and the
component as its own process (`mdm-component`). Archive: Prosody's mod_mam on its internal
storage; ejabberd's mod_mam on PostgreSQL (SQL backend, Debian's pg.sql schema, a throw-away
cluster as in tests/postgres.py): its Mnesia archive manages ~110 IM/s here, not a baseline.
Plaintext loopback, no rate limits. Numbers on a shared machine are noisy: read same-run ratios.

Run: .venv/bin/python bench/latency.py [--server prosody|ejabberd] [--rate 500] [--n 5000]
       [--archive off|on|both] [--rounds 3] [--nagle] [--profile DIR]
--nagle adds a third setup on Prosody: MDM with Prosody's default `network_settings` (Nagle's
algorithm on, as before issue 15), to show what TCP_NODELAY on the component link buys.
--profile DIR writes, per setup and round, where the CPU went during the paced window: Prosody's
Lua functions (bench/prosody/mod_lua_profile.lua, self and inclusive CPU time) and the
component's Python stacks (py-spy, if it is on PATH or in $PY_SPY), as text summaries.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.postgres: a throw-away PostgreSQL

from rawclient import RawClient  # noqa: E402

from mdm_harness.environment import DEFAULT_ACCOUNTS  # noqa: E402
from mdm_harness.faults import ComponentProcess  # noqa: E402
from mdm_harness.profiles import ServerProfile  # noqa: E402
from mdm_harness.servers.base import MODULES, ServerHandle, start_server  # noqa: E402

DEVICES = ("laptop", "mobile", "tablet")
STALL_MS = 10.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of ``pid`` from /proc (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu(ppid: int | None) -> float:
    """CPU seconds of the live children of ``ppid`` (PostgreSQL's backends under its postmaster)."""
    if ppid is None:
        return 0.0
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total + cpu_seconds(ppid)


@dataclass
class Setup:
    """A running server (and component), ready for Bob and Alice's three devices."""
    server: ServerHandle
    component: ComponentProcess | None
    workdir: Path
    pg: object | None = None  # tests.postgres.Postgres when the ejabberd archive is on PostgreSQL
    lua_profile: Path | None = None  # where Prosody's mod_lua_profile writes

    @property
    def pg_pid(self) -> int | None:
        proc = getattr(self.pg, "proc", None)
        return proc.pid if proc is not None else None

    async def close(self) -> None:
        if self.component is not None:
            await self.component.stop()
        await self.server.stop()
        if self.pg is not None:
            self.pg.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def wait_component(server: ServerHandle) -> None:
    """Until the component answers disco#info (not the server's bounce): it is connected."""
    probe = RawClient("colin", "colin-password", "probe")
    await probe.connect(server.c2s_port, carbons=False)
    try:
        for _ in range(600):
            probe.send(f"<iq type='get' id='d' to='{server.component_jid}'>"
                       "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>".encode())
            reply = await probe._until(rb"id=.d.[^>]*>")
            if b"type='result'" in reply or b'type="result"' in reply:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the component did not come up within 30 s")
    finally:
        await probe.close()


async def start_setup(kind: str, mdm: bool, archive: bool, *, nagle: bool = False,
                      mdm_enabled: bool = True, lua_profile: Path | None = None, csi: bool = True) -> Setup:
    """Stock (the server's carbons + CSI module) or MDM (bridge + component process), with the
    archive on or off. ``nagle``: Prosody with its default network_settings (Nagle on).
    ``lua_profile``: Prosody loads bench/prosody/mod_lua_profile.lua, which writes there."""
    workdir = Path(tempfile.mkdtemp(prefix="mdm-lat-"))
    without = () if archive else (MODULES[kind]["archive"],)
    extra = () if mdm or not csi else MODULES[kind]["csi_queue"]
    pg = None
    try:
        if kind == "ejabberd" and archive:
            from mdm_harness.servers.ejabberd import start_ejabberd
            from tests.postgres import Postgres, ejabberd_sql_archive
            pg = Postgres()
            await pg.start()
            sql = await ejabberd_sql_archive(pg, "ejabberd")
            server = await start_ejabberd(DEFAULT_ACCOUNTS, workdir / "server", bridge=mdm, extra_modules=extra,
                                          ack_timeout=10, sql=sql)
        else:
            options: dict[str, object] = {"network_settings": {"nagle": True}} if nagle else {}
            modules: tuple[str, ...] = ()
            if lua_profile is not None and kind == "prosody":
                from mdm_harness.servers.prosody import bridge_dir
                options.update(plugin_paths=[str(bridge_dir()), str(Path(__file__).resolve().parent / "prosody")],
                               lua_profile_file=str(lua_profile))
                modules = ("lua_profile",)
            profile = ServerProfile(modules=modules, options=options) if options else None
            server = await start_server(kind, DEFAULT_ACCOUNTS, workdir / "server", bridge=mdm,
                                        bridge_ack_timeout=10, extra_modules=extra, without_modules=without,
                                        profile=profile)
    except BaseException:
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    setup = Setup(server, None, workdir, pg, lua_profile if kind == "prosody" else None)
    if mdm:
        try:
            extra_cfg = "" if mdm_enabled else "\n[mdm]\nenabled = false\n"
            setup.component = ComponentProcess.for_server(server, workdir, "mdm", str(workdir / "b.sqlite"),
                                                          log_level="warning", extra=extra_cfg)
            await setup.component.start()
            await wait_component(server)
        except BaseException:
            await setup.close()
            raise
    return setup


@dataclass
class Device:
    client: RawClient
    received: dict[int, float] = field(default_factory=dict)  # IM number -> perf_counter at read
    task: asyncio.Task | None = None

    async def read(self) -> None:
        tail = b""
        reader = self.client._reader
        numbers = re.compile(rb"<body>IM (\d+)</body>")
        while True:
            chunk = await reader.read(1 << 20)
            now = time.perf_counter()
            if not chunk:
                return
            data = tail + chunk
            last = 0
            for m in numbers.finditer(data):
                self.received.setdefault(int(m.group(1)), now)
                last = m.end()
            tail = data[max(last, len(data) - 40):]  # a body split across reads is matched next time


@dataclass
class Result:
    p50: dict[str, float]
    p99: dict[str, float]
    max: dict[str, float]
    stalls: dict[str, int]
    server_cpu_us: float  # server CPU per IM (µs), over the paced window
    component_cpu_us: float
    pg_cpu_us: float
    achieved_rate: float


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


async def paced(bob: RawClient, first: int, n: int, rate: float) -> dict[int, float]:
    """Write IMs first..first+n-1 at ``rate`` per second; the write time of each."""
    sent: dict[int, float] = {}
    start = time.perf_counter()
    i = 0
    while i < n:
        now = time.perf_counter()
        due = min(n, int((now - start) * rate) + 1)
        while i < due:
            k = first + i
            sent[k] = time.perf_counter()
            bob.send(f"<message to='alice@localhost' type='chat' id='m{k}'><body>IM {k}</body></message>".encode())
            i += 1
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await bob.drain()
    return sent


def py_spy() -> str | None:
    return os.environ.get("PY_SPY") or shutil.which("py-spy")


def summarize_py_spy(raw: Path, out: Path, top: int = 40) -> None:
    """py-spy's raw (collapsed) stacks -> the share of samples per frame, inclusive and leaf."""
    total, incl, leaf = 0, collections.Counter(), collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        leaf[frames[-1]] += int(count)
        for f in set(frames):
            incl[f] += int(count)
    with out.open("w") as f:
        f.write(f"{total} samples (idle included: EpollSelector.select is the component waiting)\n-- inclusive\n")
        f.writelines(f"{100 * n / total:5.1f}% {k}\n" for k, n in incl.most_common(top))
        f.write("-- leaf\n")
        f.writelines(f"{100 * n / total:5.1f}% {k}\n" for k, n in leaf.most_common(top))


def summarize_lua(raw: Path, out: Path, top: int = 40) -> None:
    """mod_lua_profile's collapsed stacks -> CPU share per Lua function, self and inclusive."""
    self_t, total_t = collections.Counter(), collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, value = line.rpartition("\t")
        frames = stack.split(";")
        self_t[frames[-1]] += float(value)
        for f in set(frames):
            total_t[f] += float(value)
    total = sum(self_t.values()) or 1.0
    with out.open("w") as f:
        f.write(f"{total:.2f} CPU s sampled in Prosody's Lua (C functions charged to their Lua caller)\n-- self\n")
        f.writelines(f"{100 * v / total:5.1f}% {k}\n" for k, v in self_t.most_common(top))
        f.write("-- inclusive\n")
        f.writelines(f"{100 * v / total:5.1f}% {k}\n" for k, v in total_t.most_common(top))


async def measure(setup: Setup, n: int, rate: float, warmup: int, profile: Path | None = None) -> Result:
    server = setup.server
    devices = [Device(RawClient("alice", "alice-password", r)) for r in DEVICES]
    bob = RawClient("bob", "bob-password", "desktop")
    try:
        for d in devices:
            await d.client.connect(server.c2s_port)
            d.task = asyncio.get_running_loop().create_task(d.read())
        await bob.connect(server.c2s_port, carbons=False)

        async def all_received(upto: int, timeout: float) -> None:
            deadline = time.perf_counter() + timeout
            while any(len(d.received) < upto for d in devices):
                if time.perf_counter() > deadline:
                    got = ", ".join(f"{r} {len(d.received)}" for r, d in zip(DEVICES, devices, strict=True))
                    raise RuntimeError(f"not every device got {upto} IMs: {got}")
                await asyncio.sleep(0.01)

        await paced(bob, 0, warmup, rate)
        await all_received(warmup, 60)
        spy = None
        if profile is not None and setup.component is not None and py_spy():
            spy = await asyncio.create_subprocess_exec(
                py_spy(), "record", "-p", str(setup.component.pid), "-r", "250", "--format", "raw",
                "-o", str(profile.with_suffix(".py-spy.raw")), "-d", str(int(n / rate) + 2),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        lua_raw = profile.with_suffix(".lua.raw") if profile is not None else None
        cpu0 = (cpu_seconds(server.pid), cpu_seconds(setup.component.pid if setup.component else None),
                children_cpu(setup.pg_pid))
        t0 = time.perf_counter()
        sent = await paced(bob, warmup, n, rate)
        achieved = n / (time.perf_counter() - t0)
        await all_received(warmup + n, 60 + n / rate)
        if lua_raw is not None and setup.lua_profile is not None:
            await asyncio.sleep(2.5)  # the module dumps every 2 s; includes the connections' set-up
            if setup.lua_profile.exists():
                summarize_lua(setup.lua_profile, profile.with_suffix(".lua.txt"))
        if spy is not None:
            await spy.wait()
            raw = profile.with_suffix(".py-spy.raw")
            if raw.exists():
                summarize_py_spy(raw, profile.with_suffix(".py-spy.txt"))
        cpu1 = (cpu_seconds(server.pid), cpu_seconds(setup.component.pid if setup.component else None),
                children_cpu(setup.pg_pid))
        p50, p99, mx, stalls = {}, {}, {}, {}
        for r, d in zip(DEVICES, devices, strict=True):
            lat = sorted((d.received[k] - t) * 1000 for k, t in sent.items())
            p50[r], p99[r], mx[r] = percentile(lat, 0.50), percentile(lat, 0.99), lat[-1]
            stalls[r] = sum(1 for x in lat if x > STALL_MS)
        per_im = [(b - a) / n * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]
        return Result(p50, p99, mx, stalls, *per_im, achieved)
    finally:
        for d in devices:
            if d.task:
                d.task.cancel()
        for c in (*(d.client for d in devices), bob):
            await c.close()


SETUPS = {
    "stock": "stock: {baseline}",
    "mdm": "MDM bridge + component",
    "mdm-nagle": "  MDM, Prosody's default Nagle",
}
BASELINE = {"prosody": "mod_carbons + mod_csi_simple", "ejabberd": "mod_carboncopy + mod_client_state"}


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def report(kind: str, archive: bool, results: dict[str, list[Result]], n: int, rate: float) -> None:
    arch = {"prosody": "mod_mam, internal storage", "ejabberd": "mod_mam, SQL on PostgreSQL"}[kind]
    print(f"\n{kind}, archive {'on (' + arch + ')' if archive else 'off'}: {n} IMs at {rate:g} IM/s to a "
          f"3-device user; ms, median over {len(results['stock'])} round(s)")
    print(f"  {'setup':34} {'device':7} {'p50':>6} {'p99':>6} {'max':>6} {'>10ms':>6}"
          f"   {'CPU µs/IM: server':>17} {'component':>9}{'  pg' if kind == 'ejabberd' and archive else ''}")
    for setup, rs in results.items():
        label = SETUPS[setup].format(baseline=BASELINE[kind])
        for i, dev in enumerate(DEVICES):
            line = (f"  {label if i == 0 else '':34} {dev:7} {med([r.p50[dev] for r in rs]):6.2f} "
                    f"{med([r.p99[dev] for r in rs]):6.2f} {med([r.max[dev] for r in rs]):6.1f} "
                    f"{med([r.stalls[dev] for r in rs]):6.0f}")
            if i == 0:
                line += f"   {med([r.server_cpu_us for r in rs]):17.0f} {med([r.component_cpu_us for r in rs]):9.0f}"
                if kind == "ejabberd" and archive:
                    line += f"  {med([r.pg_cpu_us for r in rs]):4.0f}"
            print(line)
    stock = results["stock"]
    p99_stock = med([max(r.p99.values()) for r in stock])
    cpu_stock = med([r.server_cpu_us for r in stock])
    for setup, rs in results.items():
        if setup == "stock":
            continue
        p99 = med([max(r.p99.values()) for r in rs])
        cpu = med([r.server_cpu_us for r in rs])
        worst = max(max(r.max.values()) for r in rs)
        print(f"  {SETUPS[setup].strip()}: p99 (worst device) {p99:.2f} ms vs {p99_stock:.2f} stock, added "
              f"{p99 - p99_stock:+.2f} ms; worst max {worst:.1f} ms; server CPU per IM {cpu / cpu_stock:.2f}x stock")
    rates = [r.achieved_rate for rs in results.values() for r in rs]
    print(f"  (sender's achieved rate {min(rates):.0f}-{max(rates):.0f} IM/s; load average "
          f"{Path('/proc/loadavg').read_text().split()[0]})")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="prosody", choices=("prosody", "ejabberd"))
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--archive", default="both", choices=("off", "on", "both"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nagle", action="store_true", help="Prosody: also MDM with Nagle on (the state before)")
    ap.add_argument("--profile", type=Path, help="write CPU profiles of the paced window here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # children the harness reaps itself
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    kind = args.server
    from tests.postgres import EJABBERD_PG_SCHEMA
    if kind == "ejabberd" and args.archive != "off" and not Path(EJABBERD_PG_SCHEMA).exists():
        raise SystemExit(f"{EJABBERD_PG_SCHEMA} is missing (Debian's ejabberd package ships it)")
    setups = ["stock", "mdm"] + (["mdm-nagle"] if args.nagle and kind == "prosody" else [])
    print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    for archive in {"off": [False], "on": [True], "both": [False, True]}[args.archive]:
        results: dict[str, list[Result]] = {s: [] for s in setups}
        for r in range(args.rounds):  # interleaved: every setup sees the same machine noise
            for s in setups:
                prof = args.profile / f"{kind}-archive-{'on' if archive else 'off'}-{s}-{r + 1}" \
                    if args.profile else None
                lua = prof.with_suffix(".lua.raw") if prof else None
                setup = await start_setup(kind, s != "stock", archive, nagle=s == "mdm-nagle", lua_profile=lua)
                try:
                    results[s].append(await measure(setup, args.n, args.rate, args.warmup, prof))
                finally:
                    await setup.close()
        report(kind, archive, results, args.n, args.rate)
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
