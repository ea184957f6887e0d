"""R5 benchmark: how often is a backgrounded phone woken while the desktop is in use?

Alice has a laptop (active) and a phone that sent CSI <inactive/>; Bob sends her N IMs. We
count what the phone's connection receives (Bob writes one IM every 10 ms, a conversation
rather than a burst, so that each delivery can be its own wake-up) before it returns to the foreground (stanzas, and
socket reads = radio wake-ups), then what arrives when it sends <active/>. Two servers in the
same run: the server with our bridge and component, and the same server with its own carbons and
CSI queue (the baseline: Prosody's mod_carbons + mod_csi_simple, ejabberd's mod_carboncopy +
mod_client_state). With ``--login bind2`` (R9.11) the phone logs in as today's phones do, SASL2 +
Bind2 with carbons and <inactive/> inline (no nonza), and the servers get the SASL2 modules.
Run: .venv/bin/python bench/wakeups.py [--server prosody|ejabberd] [--login classic|bind2] [N]
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mdm_harness import aioxmpp_adapter as adapter
from mdm_harness.clients import ClientPool
from mdm_harness.component_control import ComponentControl
from mdm_harness.environment import DEFAULT_ACCOUNTS, online
from mdm_harness.servers.base import MODULES, login_option, server_option, start_server
from mdm_harness.servers.kinds import family
from mdm_harness.streamclient import Login, StreamClient

PACE = 0.01
PING = "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


@dataclass
class Result:
    setup: str
    background_stanzas: int
    background_reads: int
    return_stanzas: int
    return_reads: int


BASELINE = {"prosody": "mod_carbons + mod_csi_simple", "ejabberd": "mod_carboncopy + mod_client_state"}


async def measure(kind: str, mdm: bool, n: int, login: str = "classic") -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bench-"))
    server = await start_server(kind, DEFAULT_ACCOUNTS, workdir, bridge=mdm,
                                extra_modules=() if mdm else MODULES[kind]["csi_queue"],
                                features=("sasl2",) if login == "bind2" else ())
    control = ComponentControl(server) if mdm else None
    pool = ClientPool(server, control.sees_inactive if control else None)
    try:
        if control:
            await control.start()
        laptop = await online(pool, "alice@localhost", "alice-password", "laptop")
        if login == "bind2":  # R9.11: carbons and <inactive/> inside the Bind2 request
            phone = await pool.connect("phone", "alice@localhost", "alice-password", "phone",
                                       login=Login("bind2", frozenset({"carbons", "inactive"})))
            await phone.send("<presence/>")
        else:
            phone = await online(pool, "alice@localhost", "alice-password", "phone")
        bob = await online(pool, "bob@localhost", "bob-password", "desktop", carbons=False)
        if login != "bind2":
            await phone.send("<inactive xmlns='urn:xmpp:csi:0'/>")
            await phone.iq(PING)  # the server has seen <inactive/> (its buffer is empty: nothing to flush)
        await pool.barrier()
        if isinstance(phone, StreamClient):
            first = phone.socket_reads

            def background_reads() -> int:
                return phone.socket_reads - first
        else:
            counted = [0]
            adapter.count_reads(phone._client, lambda _n: counted.__setitem__(0, counted[0] + 1))

            def background_reads() -> int:
                return counted[0]
        start_stanzas = len(phone.received)
        for i in range(n):  # a conversation, not a burst: one IM every PACE seconds
            await bob.send(f"<message to='alice@localhost' type='chat' id='m{i}'><body>IM {i}</body></message>")
            await asyncio.sleep(PACE)
        if not await laptop.wait_for(n, timeout=60):
            raise RuntimeError(f"the laptop got {len(laptop.received)} of {n} IMs")
        await pool.barrier()
        bg_stanzas, bg_reads = len(phone.received) - start_stanzas, background_reads()
        await phone.send("<active xmlns='urn:xmpp:csi:0'/>")
        if not await phone.wait_for(start_stanzas + n, timeout=60):
            raise RuntimeError(f"the phone got {len(phone.received) - start_stanzas} of {n} IMs")
        await phone.drain()
        return Result("MDM component" if mdm else BASELINE[family(kind)], bg_stanzas, bg_reads,
                      len(phone.received) - start_stanzas - bg_stanzas, background_reads() - bg_reads)
    finally:
        await pool.close()
        if control:
            await control.stop()
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def main(kind: str, n: int, login: str = "classic") -> None:
    baseline = await measure(kind, False, n, login)
    ours = await measure(kind, True, n, login)
    print(f"{kind}: {n} IMs to Alice while her laptop is active and her phone ({login} login) is in the background\n")
    print(f"{'setup':32} {'phone in background':>28} {'phone returns':>26}")
    print(f"{'':32} {'stanzas':>12} {'wake-ups':>15} {'stanzas':>11} {'socket reads':>14}")
    for r in (baseline, ours):
        print(f"{r.setup:32} {r.background_stanzas:>12} {r.background_reads:>15} "
              f"{r.return_stanzas:>11} {r.return_reads:>14}")
    ratio = ours.background_reads / baseline.background_reads if baseline.background_reads else float("nan")
    print(f"\nwake-ups in the background, ours / baseline: {ours.background_reads} / "
          f"{baseline.background_reads} = {ratio:.3f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aioxmpp").setLevel(logging.ERROR)  # iq replies the harness consumes itself
    kind, args = server_option(sys.argv[1:])
    login, args = login_option(args)
    asyncio.run(main(kind, int(args[0]) if args else 100, login))
