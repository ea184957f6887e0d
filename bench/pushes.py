"""R3.6 / R5.7 benchmark: how many alerting pushes does a phone get while the laptop is in use?

Alice has a laptop (active: it sent presence) and a phone with stream management and a push
registration (XEP-0198 + XEP-0357); Bob sends her N IMs, one every PACE seconds (more than the
second over which Prosody's mod_cloud_notify batches a hibernated session's pushes, so each IM
can be its own push). A push app server double (mdm_harness.push) counts what the server
publishes. Three phone states, as in issue 11:

* hibernated: the phone sent <inactive/>, then lost its network (stream hibernated);
* hibernated without <inactive/>;
* logged out, push registration kept (an iOS app suspended after closing its stream);

and, as a control, the hibernated phone once the laptop has logged out (nobody active: pushes
must go out as stock). Each on the stock server (Prosody: mod_carbons + mod_csi_simple +
mod_smacks + mod_cloud_notify; ejabberd: mod_carboncopy + mod_client_state + mod_stream_mgmt +
mod_push) and on the same server with the bridge and the component.
With ``--login bind2`` (R9.11) the phone logs in with SASL2 + Bind2, enabling carbons and XEP-0198
inline (where the server takes XEP-0198 inline; else with the nonza right after, as phones do).
Run: .venv/bin/python bench/pushes.py [--server prosody|ejabberd] [--login classic|bind2] [N]
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mdm_harness.clients import ClientPool
from mdm_harness.component_control import ComponentControl
from mdm_harness.environment import DEFAULT_ACCOUNTS
from mdm_harness.push import SECRET as PUSH_SECRET
from mdm_harness.push import PushService
from mdm_harness.servers.base import MODULES, login_option, server_option, start_server
from mdm_harness.servers.kinds import family
from mdm_harness.streamclient import Login, StreamClient
from mdm_harness.waiting import poll_until

PACE = 1.2  # seconds between IMs: one mod_cloud_notify batch each
SETTLE = 2.0  # after the last IM, for a push that is still on its way
STATES = ("inactive, then hibernated", "hibernated without <inactive/>", "logged out, registration kept",
          "hibernated, laptop gone (control)")


@dataclass
class Row:
    state: str
    alerting: int
    silent: int


async def online(pool: ClientPool, name: str, user: str, resource: str, carbons: bool = True,
                 login: Login | None = None) -> StreamClient:
    c = await pool.connect(name, f"{user}@localhost", f"{user}-password", resource, login=login)
    assert isinstance(c, StreamClient)
    if carbons and c.login.kind == "classic":  # a Bind2 phone enabled them inline (R9.11)
        await c.enable_carbons()
    await c.send("<presence/>")
    await c.iq("<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return c


async def measure(kind: str, mdm: bool, state: str, n: int, login: str = "classic") -> Row:
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bench-push-"))
    server = await start_server(kind, DEFAULT_ACCOUNTS, workdir, bridge=mdm,
                                extra_modules=() if mdm else MODULES[kind]["csi_queue"],
                                features=("stream-management", "push", *(("sasl2",) if login == "bind2" else ())))
    control = ComponentControl(server) if mdm else None
    push = PushService(server.push_jid, PUSH_SECRET, server.host, server.push_port)
    pool = ClientPool(server, control.sees_inactive if control else None, own_streams=True)
    try:
        if control:
            await control.start()
        await push.start()
        phone = await online(pool, "phone", "alice", "phone",
                             login=Login.parse(login, "carbons, sm" if login == "bind2" else None))
        if phone.sm_id is None:
            await phone.enable_sm()
        await phone.enable_push(server.push_jid, "phone")
        if state.startswith("logged out"):
            await pool.disconnect("phone")
        laptop = await online(pool, "laptop", "alice", "laptop")
        bob = await online(pool, "bob", "bob", "desktop", carbons=False)
        if state.startswith("inactive"):
            await phone.send("<inactive xmlns='urn:xmpp:csi:0'/>")
            await phone.iq("<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        if "laptop gone" in state:
            await pool.disconnect("laptop")
        if state.startswith(("inactive", "hibernated")):
            await phone.lose_connection()
            if control:  # the component saw the hibernation
                comp = control.require()
                await poll_until(lambda: (s := comp.core.sessions.get(phone.full_jid)) is not None and s.phantom,
                                 10, "no hibernation seen")
        await asyncio.sleep(PACE)  # pushes for what was in flight at the drop are not counted
        before = len(push.history)
        for i in range(n):
            await bob.send(f"<message to='alice@localhost' type='chat' id='p{i}'><body>IM {i}</body></message>")
            await asyncio.sleep(PACE)
        if "laptop gone" not in state and not await laptop.wait_for(n, timeout=30):
            raise RuntimeError(f"the laptop got {len(laptop.received)} of {n} IMs")
        await asyncio.sleep(SETTLE)
        pushes = push.history[before:]
        alerting = sum(1 for p in pushes if p.get("alerting") == "true")
        return Row(state, alerting, len(pushes) - alerting)
    finally:
        await pool.close()
        await push.stop()
        if control:
            await control.stop()
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


BASELINE = {"prosody": "stock (mod_cloud_notify)", "ejabberd": "stock (mod_push)"}


async def main(kind: str, n: int, login: str = "classic") -> None:
    rows = []
    for state in STATES:
        stock = await measure(kind, False, state, n, login)
        ours = await measure(kind, True, state, n, login)
        rows.append((state, stock, ours))
    print(f"{kind}: pushes to Alice's phone ({login} login) for {n} IMs while her laptop is active "
          "(alerting / silent)\n")
    print(f"{'phone state':40} {BASELINE[family(kind)]:>26} {'with the component':>20}")
    for state, stock, ours in rows:
        print(f"{state:40} {f'{stock.alerting} / {stock.silent}':>26} {f'{ours.alerting} / {ours.silent}':>20}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    kind, args = server_option(sys.argv[1:])
    login, args = login_option(args)
    asyncio.run(main(kind, int(args[0]) if args else 3, login))
