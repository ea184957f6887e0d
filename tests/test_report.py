"""R8: the session report at every level, device types, CSV, rebalancing; the shared directory on
SQLite and on a real PostgreSQL."""

import csv
import io

import pytest

from mdm.devices import ANDROID_PHONE, DESKTOP, IPAD, IPHONE, device_type
from mdm.directory import PostgresDirectory, SQLiteDirectory
from mdm.report import NodeInfo, SessionRecord, build, safe_cell, summary_csv, users_csv


@pytest.mark.parametrize("resource, client, expected", [
    ("laptop", None, DESKTOP),
    ("Alice's iPhone", None, IPHONE),
    ("ipad-air", None, IPAD),
    ("phone", "http://conversations.im", ANDROID_PHONE),
    ("x1", "https://monal-im.org", IPHONE),
    ("android-tablet", None, DESKTOP),  # R8.3: an Android tablet is reported as Desktop
    ("mobile", None, ANDROID_PHONE),
    ("gajim.ABC", "https://gajim.org", DESKTOP),
])
def test_R8_3_device_type(resource, client, expected):
    assert device_type(resource, client) == expected


NODES = [NodeInfo("node1", "group-a", "east", 150, 0.8, 0.0), NodeInfo("node2", "group-a", "east", 150, 0.8, 0.0),
         NodeInfo("node3", "group-b", "west", 150, 0.8, 0.0)]


def sessions() -> list[SessionRecord]:
    out = []
    for i in range(65):  # node1: 65 users x 2 devices = 130 sessions, above 80% of 150
        out += [SessionRecord("node1", f"u{i}@x/laptop", DESKTOP, "active"),
                SessionRecord("node1", f"u{i}@x/phone", IPHONE, "active")]
    out += [SessionRecord("node2", f"v{i}@x/laptop", DESKTOP, "active") for i in range(10)]
    out += [SessionRecord("node3", "w@x/=cmd|' /C calc'!A0", DESKTOP, "phantom")]
    return out


def test_R8_1_levels_count_users_and_sessions():
    report = build(NODES, sessions(), now=0)
    assert (report.cluster.users, report.cluster.sessions) == (76, 141)
    assert [(r.name, r.users, r.sessions) for r in report.sub_clusters] == [("east", 75, 140), ("west", 1, 1)]
    assert [(r.name, r.redundancy_group, r.users, r.sessions) for r in report.nodes] == [
        ("node1", "group-a", 65, 130), ("node2", "group-a", 10, 10), ("node3", "group-b", 1, 1)]
    assert report.generated_at == "1970-01-01T00:00:00Z"
    assert report.nodes[0].above_threshold and not report.nodes[1].above_threshold


def test_rebalancing_says_how_many_users_to_move_where():
    report = build(NODES, sessions(), now=0)
    assert report.moves, "node1 is above its threshold"
    moved = sum(m.sessions for m in report.moves)
    assert all(m.source == "node1" and m.target in ("node2", "node3") for m in report.moves)
    assert 130 - moved <= 150 * 0.8  # node1 ends under its threshold
    assert all(m.users == m.sessions // 2 for m in report.moves)  # users move with both devices


def test_R8_2_csv_at_each_level_and_per_user_and_safe_against_formulas():
    report = build(NODES, sessions(), now=0)
    cluster = list(csv.reader(io.StringIO(summary_csv(report, "cluster"))))
    assert cluster[0][:6] == ["level", "name", "redundancy group", "nodes", "users logged in (1+ devices)",
                              "total sessions"]
    assert cluster[1][4:6] == ["76", "141"]
    assert len(list(csv.reader(io.StringIO(summary_csv(report, "node"))))) == 4
    users = list(csv.reader(io.StringIO(users_csv(report, "node3"))))
    assert users[1][2] == "'=cmd|' /C calc'!A0"  # a resource name is not a formula
    assert users[1][3:5] == [DESKTOP, "phantom"]
    assert safe_cell("+1") == "'+1" and safe_cell("@SUM(A1)") == "'@SUM(A1)" and safe_cell("plain") == "plain"


async def check_directory(directory) -> None:
    records = sessions()
    await directory.publish(NODES[0], [r for r in records if r.node == "node1"])
    await directory.publish(NODES[1], [r for r in records if r.node == "node2"])
    nodes, got = await directory.read()
    assert {n.node for n in nodes} == {"node1", "node2"} and len(got) == 140
    # a node replaces its whole entry: node2's users logged out
    await directory.publish(NODES[1], [])
    nodes, got = await directory.read()
    assert len(got) == 130 and build(nodes, got, now=0).nodes[1].sessions == 0


@pytest.mark.asyncio
async def test_R8_directory_on_sqlite(tmp_path):
    directory = SQLiteDirectory(str(tmp_path / "dir.sqlite"))
    try:
        await check_directory(directory)
    finally:
        await directory.close()


@pytest.mark.asyncio
async def test_R8_directory_on_a_real_postgresql_shared_by_two_nodes(postgres):
    first = await PostgresDirectory.connect(postgres.dsn)
    second = await PostgresDirectory.connect(postgres.dsn)  # another component instance
    try:
        await check_directory(first)
        nodes, got = await second.read()  # one report covers the cluster
        assert {n.node for n in nodes} == {"node1", "node2"} and len(got) == 130
    finally:
        await first.close()
        await second.close()
