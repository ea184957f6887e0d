"""The admin page (R6, R7, R8) in a real headless Chromium, against a running component with real
sessions on a real Prosody; a second node publishes to the same session directory, as another
component instance of the cluster would."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import lxml.html
import pytest

from mdm.devices import ANDROID_PHONE, DESKTOP, IPHONE
from mdm.directory import SQLiteDirectory
from mdm.report import NodeInfo, SessionRecord
from mdm_harness.clients import ClientPool
from mdm_harness.component_control import ComponentControl
from mdm_harness.environment import DEFAULT_ACCOUNTS, online
from mdm_harness.servers import start_server

ROOT = Path(__file__).parent.parent
SCREENSHOT = ROOT / "build" / "admin-page.png"


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Debian's chromium is installed by scripts/install"
    return exe


def browse(url: str, *extra: str) -> str:
    """Headless Chromium with no network beyond loopback chatter, a fresh profile each time."""
    with tempfile.TemporaryDirectory(prefix="mdm-chromium-") as profile:
        args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", *extra, url]
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.asyncio
async def test_R8_4_admin_page_in_a_real_browser(tmp_path):
    server = await start_server("prosody", DEFAULT_ACCOUNTS, tmp_path / "prosody")
    control = ComponentControl(server)
    # a small node (capacity 6) so the gauge and the threshold line are visible; alert after 0 s
    control.update_settings({"capacity": {"sized_users": 4, "duration": 0, "threshold": 0.5},
                            "report": {"node": "node-a", "redundancy_group": "pair-1", "sub_cluster": "east",
                                       "directory": str(tmp_path / "sessions.sqlite")}})
    pool = ClientPool(server, control.sees_inactive)
    other = SQLiteDirectory(str(tmp_path / "sessions.sqlite"))
    try:
        await control.start()
        await online(pool, "alice@localhost", "alice-password", "laptop")
        phone = await online(pool, "alice@localhost", "alice-password", "Alice's iPhone")
        await online(pool, "bob@localhost", "bob-password", "android-phone")
        await online(pool, "colin@localhost", "colin-password", "desktop", carbons=False)
        await phone.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        await pool.barrier()
        component = control.require()
        alert = await component.check_capacity()  # 4 sessions > 50% of 6, for 0 s: raised
        assert alert is not None and alert.kind == "raised"
        # another node of the cluster publishes to the same directory
        await other.publish(NodeInfo("node-b", "pair-1", "east", 30, 0.5, 0.0),
                            [SessionRecord("node-b", "dave@localhost/desk", DESKTOP, "active"),
                             SessionRecord("node-b", "erin@localhost/phone", ANDROID_PHONE, "phantom")])

        assert component.admin is not None
        base = f"http://127.0.0.1:{component.admin.port}/"
        token = control.settings["admin"]["token"]
        status, _ = await asyncio.to_thread(fetch, base)
        assert status == 401  # no token, no page
        status, _ = await asyncio.to_thread(fetch, base + "?token=wrong-token-wrong-token")
        assert status == 401

        dom = await asyncio.to_thread(browse, f"{base}?token={token}", "--dump-dom")
        page = lxml.html.fromstring(dom)
        counter = {td.get("data-counter"): td.text_content() for td in page.cssselect("td[data-counter]")}
        assert counter["MDMSessions"] == "3" and counter["MDMSilentModeSessions"] == "1"
        assert counter["JsmClientSessionsActive"] == "4" and counter["JSMSessionsExceedsThreshold"] == "1"
        assert "raised on node-a" in page.get_element_by_id("alert").text_content()
        # the bar chart: users and sessions per node, bar heights in proportion
        bars = {(r.get("data-node"), r.get("class").split()[1]): r for r in page.cssselect("#report-chart rect.bar")}
        assert {k: int(r.get("data-value")) for k, r in bars.items()} == {
            ("node-a", "users"): 3, ("node-a", "sessions"): 4, ("node-b", "users"): 2, ("node-b", "sessions"): 2}
        assert float(bars["node-a", "sessions"].get("height")) > float(bars["node-a", "users"].get("height")) > 0
        # the capacity gauge: node-a at 4/6, above its threshold line at 50%
        gauge = page.cssselect("#capacity-chart rect.load[data-node='node-a']")[0]
        assert gauge.get("data-load") == "0.667" and gauge.get("fill") == "#d9534f"
        levels = {(r.get("data-level"), r.get("data-name")): r for r in page.cssselect("tr.level-row")}
        cluster = levels["cluster", "cluster"]
        assert cluster.cssselect("[data-users]")[0].text_content() == "5"  # alice bob colin dave erin
        assert cluster.cssselect("[data-sessions]")[0].text_content() == "6"
        devices = {(tr[1].text_content(), tr[2].text_content()): tr[3].text_content()
                   for tr in page.cssselect("#users tr.session")}
        assert devices["alice@localhost", "Alice's iPhone"] == IPHONE
        assert devices["bob@localhost", "android-phone"] == ANDROID_PHONE
        assert devices["alice@localhost", "laptop"] == DESKTOP
        assert page.cssselect("#moves li"), "node-a is above its threshold: the page says whom to move"
        assert not page.cssselect("script") and "http" not in "".join(
            e.get("src", "") + e.get("href", "") for e in page.cssselect("[src], link[href]"))

        # the CSV links on the page work, with the token
        link = page.cssselect("a[href^='nodes/node-a/users.csv']")[0].get("href")
        status, text = await asyncio.to_thread(fetch, base + link)
        assert status == 200 and "Alice's iPhone,iPhone,active" in text
        status, text = await asyncio.to_thread(fetch, f"{base}report.csv?level=node&token={token}")
        assert status == 200 and text.count("\r\n") == 3

        # the live state as JSON (status.py): what the harness reads of a component in a container
        status, text = await asyncio.to_thread(fetch, f"{base}status.json?token={token}")
        state = json.loads(text)
        assert status == 200 and state["active"] and state["connected"] and state["synced"] == {"localhost": [""]}
        assert state["sessions"] == 4 and state["config"]["mdm.enabled"] is True
        status, text = await asyncio.to_thread(fetch, f"{base}sessions.json?user=alice@localhost&token={token}")
        alice = {s["jid"].partition("/")[2]: s for s in json.loads(text)["sessions"]}
        assert status == 200 and json.loads(text)["connected"] and set(alice) == {"laptop", "Alice's iPhone"}
        assert alice["Alice's iPhone"]["inactive"] and not alice["Alice's iPhone"]["active"]  # R3.5
        assert alice["laptop"]["active"] and alice["laptop"]["mdm"] and not alice["laptop"]["phantom"]  # R3.1
        status, _ = await asyncio.to_thread(fetch, f"{base}sessions.json?user=alice@localhost/laptop&token={token}")
        assert status == 400  # a bare JID is asked for
        status, _ = await asyncio.to_thread(fetch, f"{base}status.json")
        assert status == 401

        SCREENSHOT.parent.mkdir(exist_ok=True)
        await asyncio.to_thread(browse, f"{base}?token={token}", f"--screenshot={SCREENSHOT}",
                                "--window-size=1100,1250", "--hide-scrollbars")
        assert SCREENSHOT.stat().st_size > 10_000
    finally:
        await other.close()
        await pool.close()
        await control.stop()
        await server.stop()
