"""The seed's flow around a real client as alice's laptop (R3.8): a real Prosody (the harness),
the component running or stopped (stock, R9.10), alice's scripted phone and Bob.

    async with seed_flow(component=True) as run:
        ... start the real client with run.laptop_account() ...
        await run.laptop_online(client.log)   # the phone is then the active device
        await run.bob_writes("lunch?")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mdm_harness.clients import Client
from mdm_harness.environment import DEFAULT_ACCOUNTS, MdmEnvironment

from .waits import until

NOTIFY = "{urn:x-open-mdm:notify:0}notify"
USER, DOMAIN, PASSWORD = "alice", "localhost", "alice-password"
PHONE = f"{USER}@{DOMAIN}/phone"


@dataclass(frozen=True)
class LaptopAccount:
    """Where and as whom the real client logs in: plaintext on the harness's loopback port."""
    user: str
    domain: str
    password: str
    resource: str
    host: str
    port: int

    @property
    def jid(self) -> str:
        return f"{self.user}@{self.domain}"


@dataclass
class Run:
    env: MdmEnvironment
    phone: Client
    bob: Client
    component: bool
    sent: int = 0
    laptop_jid: str = ""

    def laptop_account(self) -> LaptopAccount:
        assert self.env.server is not None
        return LaptopAccount(USER, DOMAIN, PASSWORD, "laptop", self.env.server.host, self.env.server.c2s_port)

    async def laptop_online(self, client_log: Callable[[], str],
                            caught_up: Callable[[], bool] = lambda: True) -> None:
        """Until the laptop has logged in (its available presence reached the phone), with the
        component enabled carbons (an MDM client), and ``caught_up()`` (the client's own login
        work, e.g. its archive query, is done); then step 2 of the flow: the phone is the device
        in use (the last available presence, R3.1)."""
        env, phone = self.env, self.phone
        prefix = f"{USER}@{DOMAIN}/laptop"  # poezio adds a random suffix to the resource

        async def online() -> bool:
            jids = [s.get("from", "") for s in phone.history
                    if s.tag.endswith("}presence") and s.get("type") is None]
            self.laptop_jid = next((j for j in jids if j.startswith(prefix)), "")
            if not self.laptop_jid or not caught_up():
                return False
            if not self.component:
                return True
            assert env.component is not None
            session = env.component.require().core.sessions.get(self.laptop_jid)
            return session is not None and session.carbons
        await until(online, 30, lambda: f"the laptop did not log in:\n{client_log()}")
        await phone.send("<presence/>")
        await env.settle()
        phone.received.clear()

    async def bob_writes(self, *bodies: str, to: str = f"{USER}@{DOMAIN}") -> None:
        """IMs from Bob, to alice's bare JID or (``to``) one device: the others get carbons."""
        for body in bodies:
            self.sent += 1
            await self.bob.send(f"<message to='{to}' type='chat' id='bob-{self.sent}'>"
                                f"<body>{body}</body></message>")

    def phone_hints(self) -> list[str]:
        """The hint on each IM the phone got since the last ``laptop_online``."""
        return [n.get("value", "") for s in self.phone.received if (n := s.find(NOTIFY)) is not None]

    async def phone_to_background(self) -> None:
        """CSI <inactive/> (R3.5): the laptop is the active device again."""
        await self.phone.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        await self.env.settle()


@asynccontextmanager
async def seed_flow(*, component: bool) -> AsyncIterator[Run]:
    async with MdmEnvironment("prosody", DEFAULT_ACCOUNTS) as env:
        assert env.component is not None
        if not component:
            await env.component.stop()  # the bridge fails open: the server's own carbons (R9.10)
        phone = await env.online(f"{USER}@{DOMAIN}", PASSWORD, PHONE.rsplit("/", 1)[1])
        bob = await env.online("bob@localhost", "bob-password", "desktop", carbons=False)
        yield Run(env, phone, bob, component)
