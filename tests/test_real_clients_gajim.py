"""R3.8 with the real Gajim as alice's laptop: Debian 12's Gajim 1.7 and Debian 13's Gajim 2.1
(in a trixie root, tests/realclients/trixie.py), under Xvfb with a private D-Bus session bus and a
notification-daemon double that counts the popups (tests/realclients).

The seed's flow: the laptop (Gajim) logs in; a scripted phone becomes the active device (its
available presence, R3.1); Bob writes 3 IMs. With the component and the plugin the laptop shows
0 popups and stores all 3 for its chat view; once the phone goes to the background (CSI, R3.5)
the laptop is the active device again and each IM pops up once. Without the plugin, or on the
stock server (component stopped: no hint, R9.10), every IM pops up. Each wait is on an event
(a popup reported by the double, a stanza, a row in Gajim's archive), never a guessed delay."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from .realclients.desktop import Desktop, desktop_session
from .realclients.gajim import Gajim
from .realclients.scenario import PHONE, Run, seed_flow
from .realclients.trixie import ensure_root

QUIET = ["lunch at 1?", "the usual place", "see you there"]
LOUD = ["running late", "order for me", "thanks"]


def popups(desktop: Desktop, bodies: list[str]) -> list[str]:
    return [str(n["body"]) for n in desktop.shown if n["body"] in bodies]


# Gajim 1.7 from the host (Debian 12), Gajim 2.1 from a Debian 13 root
VERSIONS = pytest.mark.parametrize("version", ["1.7", "2.1"], ids=["gajim-1.7", "gajim-2.1"])


@asynccontextmanager
async def gajim_laptop(version: str, *, plugin: bool,
                       component: bool) -> AsyncIterator[tuple[Run, Gajim, Desktop]]:
    root = await ensure_root() if version == "2.1" else None
    workdir = Path(tempfile.mkdtemp(prefix="mdm-gajim-"))
    async with seed_flow(component=component) as run, desktop_session(workdir) as desktop:
        gajim = Gajim(desktop, run.laptop_account(), plugin=plugin, root=root)
        try:
            await gajim.start()
            await run.laptop_online(gajim.log, gajim.caught_up)
            yield run, gajim, desktop
        finally:
            await desktop.children.stop()
            gajim.release()


@pytest.mark.asyncio
@VERSIONS
async def test_R3_8_gajim_plugin_notifies_only_on_the_active_device(version: str):
    async with gajim_laptop(version, plugin=True, component=True) as (run, gajim, desktop):
        await run.bob_writes(*QUIET[:2])
        await run.bob_writes(QUIET[2], to=PHONE)  # the laptop gets a carbon, the hint on its wrapper
        await gajim.wait_received(QUIET)  # shown in the chat view: Gajim stored them
        await run.env.settle()
        assert run.phone_hints() == ["true"] * 3, "the phone was the active device (R3.2)"
        await run.phone_to_background()  # R3.5: the laptop is the active device again
        await run.bob_writes(*LOUD)
        await gajim.wait_received(LOUD)
        # popups reach the double in Gajim's order over one D-Bus connection: once the loud ones
        # are there, a popup for a quiet one would be there before them
        await desktop.wait_notifications(lambda shown: len(popups(desktop, LOUD)) == 3)
        assert popups(desktop, QUIET) == [], "no popup while the user was on the phone (R3.2, R3.8)"
        assert popups(desktop, LOUD) == LOUD, "one popup per IM on the active device (R3.8)"
        assert gajim.received() == QUIET + LOUD, "nothing lost or hidden from the chat view"


@pytest.mark.asyncio
@VERSIONS
async def test_R3_8_gajim_without_plugin_ignores_the_hint(version: str):
    async with gajim_laptop(version, plugin=False, component=True) as (run, gajim, desktop):
        await run.bob_writes(*QUIET[:2])
        await run.bob_writes(QUIET[2], to=PHONE)  # a carbon to the laptop
        await desktop.wait_notifications(lambda shown: len(popups(desktop, QUIET)) == 3)
        assert popups(desktop, QUIET) == QUIET, "stock Gajim pops up every copy, value='false' or not"
        await gajim.wait_received(QUIET)  # its archive is written a moment after the popup
        assert gajim.received() == QUIET


@pytest.mark.asyncio
@VERSIONS
@pytest.mark.parametrize("plugin", [True, False], ids=["with-plugin", "without-plugin"])
async def test_R3_8_R9_10_gajim_on_the_stock_server_notifies_as_before(version: str, plugin: bool):
    """Component stopped: the copies carry no hint and the plugin changes nothing."""
    async with gajim_laptop(version, plugin=plugin, component=False) as (run, gajim, desktop):
        await run.bob_writes(*QUIET)
        await desktop.wait_notifications(lambda shown: len(popups(desktop, QUIET)) == 3)
        assert popups(desktop, QUIET) == QUIET
        await gajim.wait_received(QUIET)
        assert gajim.received() == QUIET


@pytest.mark.asyncio
@VERSIONS
async def test_R3_8_gajim_plugin_trusts_the_servers_hint_not_the_senders(version: str):
    """A contact cannot silence the laptop by writing the hint into the message: the server
    appends its own after the sender's content, and the plugin takes the last one."""
    async with gajim_laptop(version, plugin=True, component=True) as (run, gajim, desktop):
        await run.phone_to_background()  # the laptop is the active device
        await run.bob.send("<message to='alice@localhost' type='chat' id='forged'><body>wake up</body>"
                           "<notify xmlns='urn:x-open-mdm:notify:0' value='false'/></message>")
        await desktop.wait_notifications(lambda shown: popups(desktop, ["wake up"]) == ["wake up"])
