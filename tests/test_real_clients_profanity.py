"""R3.8's client table, measured: profanity 0.13 (Debian 12) as alice's laptop, in tmux on a
private D-Bus bus with the notification double. It does not read the hint and no plugin can veto
its notification: a popup per IM whoever is the active device, with the component as without."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from .realclients.desktop import desktop_session
from .realclients.profanity import Profanity
from .realclients.scenario import PHONE, seed_flow

QUIET = ["lunch at 1?", "the usual place", "see you there"]


@pytest.mark.asyncio
@pytest.mark.parametrize("component", [True, False], ids=["component", "stock-server"])
async def test_R3_8_profanity_notifies_every_copy(component: bool):
    workdir = Path(tempfile.mkdtemp(prefix="mdm-profanity-"))
    async with seed_flow(component=component) as run, desktop_session(workdir) as desktop:
        profanity = Profanity(desktop, run.laptop_account())
        await profanity.start()
        await run.laptop_online(profanity.log)
        await run.bob_writes(*QUIET[:2])
        await run.bob_writes(QUIET[2], to=PHONE)  # a carbon to the laptop
        await run.env.settle()
        if component:
            assert run.phone_hints() == ["true"] * 3, "the phone was the active device (R3.2)"
        await desktop.wait_notifications(lambda shown: sum(any(b in str(n["body"]) for b in QUIET)
                                                           for n in shown) == 3)
