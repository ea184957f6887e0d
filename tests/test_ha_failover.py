"""R9.9 / R9.6 / R5.4 fault tests on a real Prosody with real ``mdm-component`` processes and a
real PostgreSQL: an active instance and a standby sharing the store and the HA lock.

Steady numbered traffic (200 IM/s) from bob to alice's three devices; every device's arrivals are
counted (received / lost / duplicated / out of order) and the time from the fault to "MDM again"
(the first IM sent after the fault that reaches every device with the notification hint) is
measured and printed, never asserted (a noisy shared machine): the assertions are on counts.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from mdm_harness.environment import DEFAULT_ACCOUNTS
from mdm_harness.faults import ComponentProcess, Device, Endpoint, FaultBench, cuts_summary, link_cuts
from mdm_harness.servers import start_server

RATE = 200.0  # IMs per second
AFTER = 300  # IMs sent after MDM is back, before the tally


@pytest_asyncio.fixture
async def prosody(tmp_path):
    server = await start_server("prosody", DEFAULT_ACCOUNTS, tmp_path / "prosody")
    try:
        yield server
    finally:
        await server.stop()


def endpoints(server, user: str, resources: tuple[str, ...]) -> list[Endpoint]:
    return [Endpoint(user, f"{user}-password", r, server.host, server.c2s_port) for r in resources]


def bench_for(server) -> FaultBench:
    return FaultBench(server.domain, endpoints(server, "bob", ("desktop",))[0],
                      endpoints(server, "alice", ("laptop", "mobile", "tablet")))


async def pair(prosody, postgres, tmp_path):
    active = ComponentProcess.for_server(prosody, tmp_path, "instance-a", postgres.dsn)
    standby = ComponentProcess.for_server(prosody, tmp_path, "instance-b", postgres.dsn)
    await active.start()
    await active.wait_metric("mdm_component_active", lambda v: v == 1)
    await standby.start()
    await standby.wait_metric("mdm_component_active", lambda v: v == 0)
    return active, standby


@pytest.mark.asyncio
async def test_R9_9_R5_4_sigkill_active_standby_takes_over_with_held_buffers(prosody, postgres, tmp_path):
    active, standby = await pair(prosody, postgres, tmp_path)
    bench = bench_for(prosody)
    colin = [Device(e, prosody.domain) for e in endpoints(prosody, "colin", ("laptop", "phone"))]
    try:
        await bench.connect()
        await colin[0].connect()
        await colin[1].connect(inactive=True)  # R5.1: in the background while the laptop is in use
        await bench.wait_mdm()
        # Five IMs for colin: the laptop shows them, the phone's copies are held (stored first).
        for n in range(5):
            bench.sender.send(f"<message to='colin@{prosody.domain}' type='chat'><body>IM number {n}</body>"
                              "</message>")
        await bench.until(lambda: colin[0].seen == set(range(5)), 20, "colin's laptop got its 5 IMs")
        assert colin[1].arrivals == []

        bench.start_traffic(RATE)
        await bench.wait_mdm()
        await bench.send_more(AFTER)  # under steady traffic
        fault = bench.mark("SIGKILL of the active instance")
        await active.kill()
        took = await bench.wait_mdm_again(fault)
        await standby.wait_metric("mdm_component_active", lambda v: v == 1, timeout=5)
        await bench.send_more(AFTER)
        report = await bench.finish()
        print(f"\nR9.9 SIGKILL active, standby takes over ({RATE:.0f} IM/s, Prosody):\n{report.format()}")
        report.assert_complete()
        assert took > 0

        # R5.4 / R9.9: the standby restored the phone's held IMs; <active/> flushes them, once each.
        colin[1].send("<active xmlns='urn:xmpp:csi:0'/>")
        await bench.until(lambda: colin[1].seen == set(range(5)), 20, "colin's phone got its held IMs")
        await colin[1].ping()
        assert sorted(colin[1].seqs()) == list(range(5))
        assert all(a.delayed for a in colin[1].arrivals)
        assert "restored 5 held stanza(s)" in standby.log_text()
        log = standby.log_text()
        assert log.count("standby: another instance is active") == 1 and log.count("active: took over") == 1
    finally:
        await bench.close()
        for d in colin:
            await d.close()
        await active.stop()
        await standby.stop()


@pytest.mark.asyncio
async def test_R9_9_sigkill_standby_changes_nothing(prosody, postgres, tmp_path):
    active, standby = await pair(prosody, postgres, tmp_path)
    bench = bench_for(prosody)
    try:
        await bench.connect()
        bench.start_traffic(RATE)
        await bench.wait_mdm()
        first = len(bench.sent_at)
        await bench.send_more(AFTER)
        await standby.kill()
        await bench.send_more(AFTER)
        report = await bench.finish()
        print(f"\nR9.9 SIGKILL standby ({RATE:.0f} IM/s, Prosody):\n{report.format()}")
        report.assert_complete()
        # every IM from the moment MDM served was delivered by MDM: no fail-open moment at all
        for d in bench.devices:
            assert all(a.notify is not None for a in d.arrivals if a.seq >= first), d.name
        assert (await active.metrics())["mdm_component_active"] == 1
        assert "lost the HA lock" not in active.log_text()
    finally:
        await bench.close()
        await active.stop()
        await standby.stop()


@pytest.mark.asyncio
async def test_R9_6_component_link_flaps_30_times_nothing_lost_or_duplicated(prosody, tmp_path):
    report, accepted = await link_cuts(prosody, bench_for(prosody), tmp_path, 30, RATE)
    print(f"\nR9.6 30 link cuts ({RATE:.0f} IM/s, Prosody):\n" + cuts_summary(report))
    report.assert_complete()
    assert accepted == 31


@pytest.mark.asyncio
async def test_R9_9_active_loses_its_lock_session_is_fenced_and_one_instance_serves(prosody, postgres, tmp_path):
    """PostgreSQL ends the active instance's lock session (as when the database restarts or the
    network between them fails): it drops its XMPP link at once and goes back to waiting; the
    lock goes to one instance, MDM comes back, nothing lost or duplicated."""
    import asyncpg

    active, standby = await pair(prosody, postgres, tmp_path)
    bench = bench_for(prosody)
    try:
        await bench.connect()
        bench.start_traffic(RATE)
        await bench.wait_mdm()
        await bench.send_more(AFTER // 2)
        fault = bench.mark("the active instance's lock session ended")
        conn = await asyncpg.connect(postgres.dsn)
        try:
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        finally:
            await conn.close()
        assert ended == 1
        took = await bench.wait_mdm_again(fault)
        await bench.send_more(AFTER)
        report = await bench.finish()
        print(f"\nR9.9 lock session ended, fencing ({RATE:.0f} IM/s, Prosody):\n{report.format()}")
        report.assert_complete()
        assert took > 0
        assert "lost the HA lock" in active.log_text()
        roles = [(await p.metrics())["mdm_component_active"] for p in (active, standby)]
        assert sorted(roles) == [0, 1]  # exactly one instance serves
    finally:
        await bench.close()
        await active.stop()
        await standby.stop()
