"""R3.8 with the real poezio (Debian's package, 0.14) as alice's laptop, in tmux: the terminal
bell counted from every byte its pane writes, its conversation log read back.

The seed's flow as for Gajim (tests/test_real_clients_gajim.py): the phone is the active device,
Bob writes 3 IMs: with the component and the plugin poezio does not beep and shows and logs all
3; once the phone goes to the background (R3.5) it beeps once per IM again. Without the plugin,
or on the stock server (component stopped: no hint, R9.10), it beeps for every IM.

Desktop popups: poezio's simple_notify (0.14, and upstream's plugins/simple_notify.py as of
January 2024) raises AttributeError in its conversation_msg handler (``fro = message['from'].bare`` is a str,
then ``fro.bare``), so it never pops up for a 1:1 IM; measured here as 0 popups in every run.
The plugin guards simple_notify's handlers all the same (they do pop up for MUC private
messages, and will for 1:1 IMs once simple_notify is fixed): proved with a stand-in of the same
name and shape that works (tests/realclients/poezio.py, NOTIFIER_STAND_IN)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from .realclients.poezio import Poezio
from .realclients.scenario import PHONE, Run, seed_flow

QUIET = ["lunch at 1?", "the usual place", "see you there"]
LOUD = ["running late", "order for me", "thanks"]


@asynccontextmanager
async def poezio_laptop(*, plugin: bool, component: bool,
                        stand_in: bool = False) -> AsyncIterator[tuple[Run, Poezio]]:
    workdir = Path(tempfile.mkdtemp(prefix="mdm-poezio-"))
    async with seed_flow(component=component) as run:
        poezio = Poezio(workdir, run.laptop_account(), plugin=plugin, stand_in=stand_in)
        try:
            await poezio.start()
            await run.laptop_online(poezio.log)
            yield run, poezio
        finally:
            await poezio.stop()
    poezio.remove()


@pytest.mark.asyncio
async def test_R3_8_poezio_plugin_beeps_only_on_the_active_device():
    async with poezio_laptop(plugin=True, component=True) as (run, poezio):
        await run.bob_writes(*QUIET[:2])
        await run.bob_writes(QUIET[2], to=PHONE)  # the laptop gets a carbon, the hint on its wrapper
        await poezio.wait_received(QUIET)  # shown in its tab and logged
        await run.env.settle()
        assert run.phone_hints() == ["true"] * 3, "the phone was the active device (R3.2)"
        await run.phone_to_background()  # R3.5: the laptop is the active device again
        await run.bob_writes(*LOUD)
        await poezio.wait_received(LOUD)
        # the pane's bytes arrive in order: once the 3 loud beeps are there, a quiet one would be too
        await poezio.wait_beeps(3)
        assert poezio.beeps() == 3, "no beep while the user was on the phone, one per IM after (R3.8)"
        assert poezio.popups() == []
        log = poezio.received()
        assert all(b in log for b in QUIET + LOUD), "nothing lost or hidden from the tab"


@pytest.mark.asyncio
async def test_R3_8_poezio_without_plugin_ignores_the_hint():
    async with poezio_laptop(plugin=False, component=True) as (run, poezio):
        await run.bob_writes(*QUIET[:2])
        await run.bob_writes(QUIET[2], to=PHONE)  # a carbon to the laptop
        await poezio.wait_received(QUIET)
        await poezio.wait_beeps(3)
        assert poezio.beeps() == 3, "stock poezio beeps for every copy, value='false' or not"
        assert poezio.popups() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("plugin", [True, False], ids=["with-plugin", "without-plugin"])
async def test_R3_8_R9_10_poezio_on_the_stock_server_beeps_as_before(plugin: bool):
    """Component stopped: the copies carry no hint and the plugin changes nothing."""
    async with poezio_laptop(plugin=plugin, component=False) as (run, poezio):
        await run.bob_writes(*QUIET)
        await poezio.wait_received(QUIET)
        await poezio.wait_beeps(3)
        assert poezio.beeps() == 3


@pytest.mark.asyncio
async def test_R3_8_poezio_plugin_guards_the_popup_notifier():
    """simple_notify's popups (here its working stand-in) follow the hint as the bell does."""
    async with poezio_laptop(plugin=True, component=True, stand_in=True) as (run, poezio):
        await run.bob_writes(*QUIET[:2])
        await run.bob_writes(QUIET[2], to=PHONE)
        await poezio.wait_received(QUIET)
        await run.phone_to_background()
        await run.bob_writes(*LOUD)
        # the stand-in writes each popup as poezio handles the IM, in order: once the loud ones
        # are there, a quiet one would be there before them
        await poezio.wait_popups(3)
        assert poezio.popups() == LOUD, "popups only on the active device (R3.8)"


@pytest.mark.asyncio
async def test_R3_8_poezio_without_plugin_the_popup_notifier_ignores_the_hint():
    async with poezio_laptop(plugin=False, component=True, stand_in=True) as (run, poezio):
        await run.bob_writes(*QUIET[:2])
        await run.bob_writes(QUIET[2], to=PHONE)
        await poezio.wait_popups(3)
        assert poezio.popups() == QUIET
