"""R7: session kinds, capacity model, the threshold alert, driven by a made-up clock."""

import pytest

from mdm.capacity import CapacityConfig, CapacityMonitor, SessionCounts, count_sessions
from mdm.sessions import SessionTable


def counts(total: int) -> SessionCounts:
    return SessionCounts(active=total, phantom=0, hybrid=0, users=total)


@pytest.mark.parametrize("sized, ha, capacity", [(5000, False, 7500), (15000, False, 22500), (25000, False, 37500),
                                                 (25000, True, 18750), (1000, False, 1500)])
def test_R7_3_capacity_is_1_5_times_the_sized_users_halved_in_an_ha_pair(sized, ha, capacity):
    assert CapacityConfig(sized_users=sized, ha_pair=ha).capacity == capacity


def test_R7_1_session_kinds_and_combined_users():
    table = SessionTable()
    for jid in ("alice@x/laptop", "alice@x/phone", "bob@x/desk", "gw@x/bridge"):
        table.bind(jid)
    table.get("alice@x/phone").phantom = True
    c = count_sessions(table, {"gw@x"})
    assert (c.active, c.phantom, c.hybrid, c.users, c.total) == (2, 1, 1, 3, 4)


def test_R7_4_raised_only_after_the_whole_duration_above_then_repeats_then_clears():
    cfg = CapacityConfig(sized_users=100, threshold=0.8, duration=600, repeat=600)  # capacity 150, limit 120
    m = CapacityMonitor(cfg)
    assert m.update(0, counts(121)) is None  # above, but not for long
    assert m.update(599, counts(130)) is None
    assert m.counters()["JSMSessionsExceedsThreshold"] == 0
    alert = m.update(600, counts(130))
    assert alert is not None and alert.kind == "raised" and alert.above_since == 0
    assert m.counters()["JSMSessionsExceedsThreshold"] == 1
    assert "JSMSessionsExceedsThreshold raised" in alert.message("node1") and "87%" in alert.message("node1")
    assert m.update(900, counts(130)) is None  # held, but not yet time to repeat
    again = m.update(1200, counts(130))
    assert again is not None and again.kind == "repeated"
    cleared = m.update(1201, counts(120))  # at the limit is not above it
    assert cleared is not None and cleared.kind == "cleared"
    assert m.counters()["JSMSessionsExceedsThreshold"] == 0


def test_R7_4_a_dip_below_the_threshold_restarts_the_duration():
    m = CapacityMonitor(CapacityConfig(sized_users=100, duration=600))
    m.update(0, counts(130))
    m.update(300, counts(100))  # dip
    assert m.update(700, counts(130)) is None  # above again since 700 only
    assert m.update(1300, counts(130)).kind == "raised"


def test_R7_4_disabled_never_alerts_and_counters_still_move():
    m = CapacityMonitor(CapacityConfig(sized_users=10, enabled=False, duration=0))
    assert m.update(0, SessionCounts(50, 2, 1, 40)) is None
    assert m.counters() == {"JsmClientSessionsActive": 50, "JsmPhantomSessionsActive": 2,
                            "JsmHybridSessionsActive": 1, "JSMSessionsExceedsThreshold": 0}


def test_R7_4_threshold_is_configurable():
    m = CapacityMonitor(CapacityConfig(sized_users=100, threshold=0.5, duration=0))  # limit 75
    assert m.update(0, counts(76)).kind == "raised"


@pytest.mark.asyncio
async def test_R7_4_the_alert_goes_to_the_log_the_gauge_and_the_webhook(tmp_path, caplog):
    import asyncio

    from aiohttp import web

    from mdm.component import Component
    from mdm.config import from_dict

    received: list[dict] = []
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        got.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/alert", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        clock = [1000.0]
        cfg = from_dict({"component": {"jid": "mdm.x", "secret": "s"},
                         "buffer": {"store": str(tmp_path / "b.sqlite")},
                         "capacity": {"sized_users": 2, "duration": 60, "webhook": f"http://127.0.0.1:{port}/alert"},
                         "report": {"node": "node-7"}})
        component = Component(cfg, clock=lambda: clock[0])
        for r in ("a", "b", "c"):  # 3 sessions > 80% of capacity 3
            component.core.sessions.bind(f"alice@x/{r}")
        assert await component.check_capacity() is None  # above, not yet for 60 s
        clock[0] += 60
        alert = await component.check_capacity()
        assert alert is not None and alert.kind == "raised"
        await asyncio.wait_for(got.wait(), 10)
        assert received[0]["alert"] == "JSMSessionsExceedsThreshold" and received[0]["node"] == "node-7"
        assert received[0]["state"] == "raised" and received[0]["sessions"] == 3 and received[0]["capacity"] == 3
        assert component.counters()["JSMSessionsExceedsThreshold"] == 1
        assert "JSMSessionsExceedsThreshold raised on node-7" in caplog.text
        assert component.alert_text() is not None
        await component.store.close()
    finally:
        await runner.cleanup()


def test_R7_1_bridge_events_make_phantom_sessions():
    from mdm.core import MdmCore
    from mdm.events import PushRegistration, Resync, SessionBound, SessionHibernated

    core = MdmCore()
    core.handle(SessionBound("alice@x/laptop", "1"), 0)
    core.handle(SessionBound("alice@x/phone", "2"), 0)
    core.handle(SessionHibernated("alice@x/phone", True), 1)
    core.handle(PushRegistration("bob@x", True), 1)  # bob has no live device: one phantom session
    core.handle(PushRegistration("alice@x", True), 1)  # alice is online: nothing more
    c = count_sessions(core.sessions, set())
    assert (c.active, c.phantom, c.users) == (1, 2, 2)
    core.handle(SessionHibernated("alice@x/phone", False), 2)
    core.handle(PushRegistration("bob@x", False), 2)
    assert count_sessions(core.sessions, set()).phantom == 0
    core.handle(PushRegistration("bob@x", True), 3)
    core.handle(Resync("x"), 4)  # the bridge reports everything again
    assert core.sessions.push_users == set()
