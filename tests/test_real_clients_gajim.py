"""R3.8 with the real Gajim (Debian's package) as alice's laptop, under Xvfb with a private
D-Bus session bus and a notification-daemon double that counts the popups (tests/realclients).

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
from dataclasses import dataclass
from pathlib import Path

import pytest

from mdm_harness.clients import Client
from mdm_harness.environment import DEFAULT_ACCOUNTS, MdmEnvironment
from mdm_harness.waiting import poll_until

from .realclients.desktop import Desktop
from .realclients.gajim import Gajim, GajimAccount

NOTIFY = "{urn:x-open-mdm:notify:0}notify"
LAPTOP = "alice@localhost/laptop"


@dataclass
class Run:
    env: MdmEnvironment
    desktop: Desktop
    gajim: Gajim
    phone: Client
    bob: Client

    async def bob_writes(self, *bodies: str) -> None:
        for body in bodies:
            await self.bob.send(f"<message to='alice@localhost' type='chat' id='{body.replace(' ', '-')}'>"
                                f"<body>{body}</body></message>")

    def popups(self, *bodies: str) -> list[str]:
        return [str(n["body"]) for n in self.desktop.shown if n["body"] in bodies]


@asynccontextmanager
async def laptop_and_phone(*, plugin: bool, component: bool) -> AsyncIterator[Run]:
    workdir = Path(tempfile.mkdtemp(prefix="mdm-gajim-"))
    async with MdmEnvironment("prosody", DEFAULT_ACCOUNTS) as env, Desktop(workdir) as desktop:
        assert env.component is not None and env.server is not None
        if not component:
            await env.component.stop()  # the bridge fails open: the server's own carbons (R9.10)
        phone = await env.online("alice@localhost", "alice-password", "phone")
        bob = await env.online("bob@localhost", "bob-password", "desktop", carbons=False)
        account = GajimAccount("alice", "localhost", "alice-password", "laptop", env.server.host, env.server.c2s_port)
        gajim = Gajim(desktop, account, plugin=plugin)
        await gajim.start()

        async def logged_in() -> bool:
            online = any(s.tag.endswith("}presence") and s.get("from") == LAPTOP and s.get("type") is None
                         for s in phone.history)
            if not component:
                return online
            session = await env.component.session(LAPTOP)
            mdm = env.component.require().core.sessions.get(LAPTOP) if session else None
            return online and mdm is not None and mdm.carbons  # Gajim enabled carbons: an MDM client
        await poll_until(logged_in, 30, f"Gajim did not log in:\n{gajim.log()}", interval=0.05)
        # step 2 of the seed's flow: the phone is the device in use (the last available presence)
        await phone.send("<presence/>")
        await env.settle()
        phone.received.clear()
        yield Run(env, desktop, gajim, phone, bob)


@pytest.mark.asyncio
async def test_R3_8_gajim_plugin_notifies_only_on_the_active_device():
    quiet = ["lunch at 1?", "the usual place", "see you there"]
    loud = ["running late", "order for me", "thanks"]
    async with laptop_and_phone(plugin=True, component=True) as run:
        await run.bob_writes(*quiet)
        await run.gajim.wait_received(quiet)  # shown in the chat view: Gajim stored them
        await run.env.settle()
        hints = [s.find(NOTIFY).get("value") for s in run.phone.received if s.find(NOTIFY) is not None]
        assert hints == ["true"] * 3, "the phone was the active device (R3.2)"
        # the phone goes to the background (R3.5): the laptop is the active device again
        await run.phone.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        await run.env.settle()
        await run.bob_writes(*loud)
        await run.gajim.wait_received(loud)
        # popups reach the double in Gajim's order over one D-Bus connection: once the loud ones
        # are there, a popup for a quiet one would be there before them
        await run.desktop.wait_notifications(lambda shown: len(run.popups(*loud)) == 3)
        assert run.popups(*quiet) == [], "no popup while the user was on the phone (R3.2, R3.8)"
        assert run.popups(*loud) == loud, "one popup per IM on the active device (R3.8)"
        assert run.gajim.received() == quiet + loud, "nothing lost or hidden from the chat view"


@pytest.mark.asyncio
async def test_R3_8_gajim_without_plugin_ignores_the_hint():
    quiet = ["lunch at 1?", "the usual place", "see you there"]
    async with laptop_and_phone(plugin=False, component=True) as run:
        await run.bob_writes(*quiet)
        await run.desktop.wait_notifications(lambda shown: len(run.popups(*quiet)) == 3)
        assert run.popups(*quiet) == quiet, "stock Gajim pops up every copy, value='false' or not"
        await run.gajim.wait_received(quiet)  # its archive is written a moment after the popup
        assert run.gajim.received() == quiet


@pytest.mark.asyncio
@pytest.mark.parametrize("plugin", [True, False], ids=["with-plugin", "without-plugin"])
async def test_R3_8_R9_10_gajim_on_the_stock_server_notifies_as_before(plugin: bool):
    """Component stopped: the copies carry no hint and the plugin changes nothing."""
    quiet = ["lunch at 1?", "the usual place", "see you there"]
    async with laptop_and_phone(plugin=plugin, component=False) as run:
        await run.bob_writes(*quiet)
        await run.desktop.wait_notifications(lambda shown: len(run.popups(*quiet)) == 3)
        assert run.popups(*quiet) == quiet
        await run.gajim.wait_received(quiet)
        assert run.gajim.received() == quiet
