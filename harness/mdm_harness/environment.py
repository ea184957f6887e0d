"""The plain async API: a real server with the component and a client pool, in one context.

    async with MdmEnvironment("prosody", [Account("alice", "pw"), Account("bob", "pw")]) as env:
        laptop = await env.online("alice@localhost", "pw", resource="laptop")
        bob = await env.online("bob@localhost", "pw", resource="desktop", carbons=False)
        await bob.send("<message to='alice@localhost' type='chat'><body>hi</body></message>")
        print(await laptop.next_stanza())

The pytest fixture ``mdm_env`` (mdm_harness.pytest_plugin) yields one of these.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from .clients import Client, ClientPool
from .component_control import ControlledComponent
from .component_remote import control_for
from .servers import Account, ServerHandle, start_server

# What `mdm-harness serve` and the pytest fixture create when no scenario says otherwise.
DEFAULT_ACCOUNTS = [Account(u, f"{u}-password") for u in ("alice", "bob", "colin")]


class MdmEnvironment:
    def __init__(self, server_kind: str, accounts: list[Account], *, keep: bool = False) -> None:
        self.kind = server_kind
        self.accounts = accounts
        self.keep = keep
        self.workdir: Path | None = None
        self.server: ServerHandle | None = None
        self.component: ControlledComponent | None = None
        self.pool: ClientPool | None = None

    async def __aenter__(self) -> MdmEnvironment:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"mdm-{self.kind}-"))
        try:
            self.server = await start_server(self.kind, self.accounts, self.workdir)
            self.component = control_for(self.server)
            await self.component.start()
            self.pool = ClientPool(self.server, self.component.sees_inactive)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self.component is not None:
            await self.component.stop()
        if self.server is not None:
            await self.server.stop()
        if self.workdir is not None and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def connect(self, jid: str, password: str, resource: str | None = None,
                      name: str | None = None) -> Client:
        assert self.pool is not None
        return await self.pool.connect(name or f"{jid}/{resource}", jid, password, resource)

    async def online(self, jid: str, password: str, resource: str | None = None, *,
                     carbons: bool = True, name: str | None = None) -> Client:
        assert self.pool is not None
        return await online(self.pool, jid, password, resource, carbons=carbons, name=name)

    async def settle(self) -> None:
        """Barrier: everything sent so far has been handled and delivered (no sleeping)."""
        assert self.pool is not None
        await self.pool.barrier()


async def online(pool: ClientPool, jid: str, password: str, resource: str | None = None, *,
                 carbons: bool = True, name: str | None = None) -> Client:
    """Connect, enable carbons (an MDM client) unless told not to, send available presence and
    consume the presence echoes, so the next stanza a test reads is its own business."""
    client = await pool.connect(name or f"{jid}/{resource}", jid, password, resource)
    if carbons:
        await client.enable_carbons()
    await client.send("<presence/>")
    await pool.barrier()
    for c in pool.clients.values():
        c.received = [s for s in c.received if not s.tag.endswith("}presence")]
    return client
