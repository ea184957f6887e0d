"""What every harness client does the same way: an iq with its reply, and enabling carbons."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from lxml import etree

_ids = itertools.count(1)


class IqRoundTrips:
    """``iq()`` waits for the reply to the id it gives the stanza; the client's reader resolves
    the future it finds in ``_waiting_ids``. Needs ``name``, ``send()`` and ``_waiting_ids``."""

    name: str
    send: Callable[[str], Awaitable[None]]  # the client's own
    _waiting_ids: dict[str, asyncio.Future[etree._Element]]
    _iq_prefix = "h"
    _error: type[Exception] = RuntimeError

    async def iq(self, xml: str, timeout: float = 5.0) -> etree._Element:
        """Send an <iq/> (its id attribute must be the placeholder {id}) and return the reply."""
        iq_id = f"{self._iq_prefix}{next(_ids)}"
        fut: asyncio.Future[etree._Element] = asyncio.get_running_loop().create_future()
        self._waiting_ids[iq_id] = fut
        await self.send(xml.replace("{id}", iq_id))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting_ids.pop(iq_id, None)

    async def enable_carbons(self) -> None:
        reply = await self.iq("<iq type='set' id='{id}'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        if reply.get("type") != "result":
            raise self._error(f"{self.name}: carbons enable failed: {etree.tostring(reply).decode()}")
