"""P5 failover (R9.6, R9.9): what users see when a component instance dies or its link flaps.

An active `mdm-component` process and a standby (same JID, same PostgreSQL store and HA lock),
steady numbered traffic from bob to alice's three devices, then:
  1. SIGKILL of the active instance: the standby takes over;
  2. SIGKILL of the standby: nothing may change;
  3. the component's link cut 30 times in a row (a loopback proxy between component and server).
Printed per device: received / lost / duplicated / out of order / with the MDM hint, and the time
from the fault to "MDM again" (every device got an IM sent after the fault with the hint).
Real processes, a real server and a real PostgreSQL, plaintext on loopback.
Run: .venv/bin/python bench/failover.py [--server prosody|ejabberd|ejabberd-cluster] [RATE] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.postgres: a throw-away PostgreSQL

from mdm_harness.environment import DEFAULT_ACCOUNTS  # noqa: E402
from mdm_harness.faults import ComponentProcess, Endpoint, FaultBench, LinkProxy  # noqa: E402
from mdm_harness.servers.base import MODULES, server_option, start_server  # noqa: E402
from tests.postgres import Postgres  # noqa: E402


def bench_for(server) -> FaultBench:
    """On a cluster (R9.8) the clients sit on the nodes round-robin: alice's devices on both."""
    def ep(user: str, resource: str, place: int) -> Endpoint:
        return Endpoint(user, f"{user}-password", resource, server.host, server.c2s_port_for(place))
    return FaultBench(server.domain, ep("bob", "desktop", 1),
                      [ep("alice", r, i) for i, r in enumerate(("laptop", "mobile", "tablet"))])


async def one_round(kind: str, rate: float) -> list[tuple[str, object]]:
    workdir = Path(tempfile.mkdtemp(prefix="mdm-failover-"))
    pg = Postgres()
    await pg.start()
    # Without the archive on ejabberd: its Mnesia archive writes in the sender's session and
    # manages ~110 IM/s here, so at 200 IM/s it, not the failover, sets the pace (and the backlog
    # outlives the tally). Prosody's internal archive keeps up; it stays on.
    without = (MODULES[kind]["archive"],) if kind.startswith("ejabberd") else ()
    server = await start_server(kind, DEFAULT_ACCOUNTS, workdir / "server", without_modules=without)
    out: list[tuple[str, object]] = []
    processes: list[ComponentProcess] = []
    proxy = None
    try:
        # 1 and 2: an HA pair on the shared store
        for what in ("SIGKILL of the active instance", "SIGKILL of the standby"):
            await pg_reset(pg)
            active = ComponentProcess.for_server(server, workdir, f"{len(processes)}-a", pg.dsn, log_level="warning")
            standby = ComponentProcess.for_server(server, workdir, f"{len(processes)}-b", pg.dsn, log_level="warning")
            processes += [active, standby]
            await active.start()
            await active.wait_metric("mdm_component_active", lambda v: v == 1)
            await standby.start()
            await standby.wait_metric("mdm_component_active", lambda v: v == 0)
            bench = bench_for(server)
            try:
                await bench.connect()
                bench.start_traffic(rate)
                await bench.wait_mdm()
                await bench.send_more(int(rate * 2))
                fault = bench.mark(what)
                if "active" in what:
                    await active.kill()
                    await mdm_again(bench, fault)
                else:
                    await standby.kill()
                await bench.send_more(int(rate * 2))
                out.append((what, await bench.finish()))
            finally:
                await bench.close()
                await active.stop()
                await standby.stop()
        # 3: 30 link cuts in a row
        proxy = LinkProxy(server.host, server.component_port)
        await proxy.start()
        flapping = ComponentProcess.for_server(server, workdir, "flap", pg.dsn, servers=[("127.0.0.1", proxy.port)],
                                                log_level="warning")
        processes.append(flapping)
        await flapping.start()
        await flapping.wait_metric("mdm_component_active", lambda v: v == 1)
        bench = bench_for(server)
        try:
            await bench.connect()
            bench.start_traffic(rate)
            await bench.wait_mdm()
            for n in range(30):
                fault = bench.mark(f"cut {n + 1}")
                proxy.cut()
                if not await mdm_again(bench, fault):
                    break
            out.append(("30 cuts of the component link", await bench.finish()))
        finally:
            await bench.close()
        return out
    finally:
        for p in processes:
            await p.stop()
        if proxy is not None:
            await proxy.close()
        await server.stop()
        pg.stop()
        if os.environ.get("MDM_KEEP"):
            print(f"  (kept {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def mdm_again(bench: FaultBench, fault: tuple[str, float], timeout: float = 30.0) -> bool:
    """Wait for MDM again; if it does not come back, say so and go on to the tally."""
    try:
        await bench.wait_mdm_again(fault, timeout)
        return True
    except TimeoutError as e:
        print(f"  !! {fault[0]}: MDM not back within {timeout:.0f} s ({str(e)[-160:]})")
        return False


async def pg_reset(pg: Postgres) -> None:
    """Each pair starts with an empty store."""
    import asyncpg
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS mdm_held")
    finally:
        await conn.close()


async def main(kind: str, rate: float, rounds: int) -> None:
    print(f"{kind}: steady {rate:.0f} IM/s from bob to alice's 3 devices; active + standby mdm-component "
          f"processes on a shared PostgreSQL store and HA lock; {rounds} round(s)")
    by_fault: dict[str, list] = {}
    for _ in range(rounds):
        for what, report in await one_round(kind, rate):
            by_fault.setdefault(what, []).append(report)
    for what, reports in by_fault.items():
        print(f"\n{what}:")
        for i, report in enumerate(reports):
            print(f" round {i + 1}:")
            print("\n".join(line for line in report.format().splitlines() if "MDM again" not in line))
        times = [s for r in reports for _, s in r.mdm_again]
        if times:
            print(f"  MDM again after the fault: median {statistics.median(times) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms ({len(times)} faults)")
        clean = all(r.clean for r in reports)
        print(f"  => {'0 lost, 0 duplicated on every device' if clean else 'LOSS OR DUPLICATES (see above)'}")


if __name__ == "__main__":
    kind, args = server_option(sys.argv[1:])
    asyncio.run(main(kind, float(args[0]) if args else 200.0, int(args[1]) if len(args) > 1 else 1))
