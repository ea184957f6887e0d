"""Throughput: IMs per second to a user with three devices, MDM component vs the server's own carbons.

Bob sends N IMs to alice@localhost as fast as he can; Alice has three devices with carbons on and
equal priority, so natively all three are RFC 6121 recipients and with MDM all three are fanned
out. We time from the first write to the last device holding all N. Both setups run here, one
after the other, on a fresh server (plaintext, no rate limits); the component runs as its own
process (`mdm-component`), as in production. The goal: >= 0.8 of native.
Run: .venv/bin/python bench/throughput.py [--server prosody|ejabberd] [N] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rawclient import RawClient

from mdm_harness.environment import DEFAULT_ACCOUNTS
from mdm_harness.ports import free_ports
from mdm_harness.servers.base import MODULES, server_option, start_server


async def one_round(kind: str, mode: str, n: int) -> float:
    mdm = mode != "native"
    workdir = Path(tempfile.mkdtemp(prefix="mdm-tput-"))
    # No archive: mod_mam writes every IM to files and would dominate both setups alike.
    server = await start_server(kind, DEFAULT_ACCOUNTS, workdir, bridge=mdm,
                                without_modules=(MODULES[kind]["archive"],))
    component = None
    devices = [RawClient("alice", "alice-password", r) for r in ("laptop", "mobile", "tablet")]
    bob = RawClient("bob", "bob-password", "desktop")
    try:
        if mdm:
            cfg = workdir / "mdm.toml"
            cfg.write_text(f'[component]\njid = "{server.component_jid}"\nsecret = "{server.component_secret}"\n'
                           f'server_port = {server.component_port}\n[buffer]\nstore = "{workdir}/b.sqlite"\n'
                           f'[metrics]\nport = {free_ports(1)[0]}\n[log]\nlevel = "warning"\n'
                           f'[mdm]\nenabled = {"false" if mode == "mdm-off" else "true"}\n')
            component = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mdm.cli", "--config", str(cfg))
            probe = RawClient("colin", "colin-password", "probe")
            await probe.connect(server.c2s_port, carbons=False)
            # the component is up when its disco answers with a result, not Prosody's bounce
            while True:
                probe.send(b"<iq type='get' id='d' to='mdm.localhost'>"
                           b"<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
                reply = await probe._until(rb"id=.d.[^>]*>")
                if b"type='result'" in reply or b'type="result"' in reply:
                    break
                await asyncio.sleep(0.05)
            await probe.close()
        for d in devices:
            await d.connect(server.c2s_port)
            d.messages = 0
            d.start_counting()
        await bob.connect(server.c2s_port, carbons=False)
        payload = b"".join(f"<message to='alice@localhost' type='chat' id='m{i}'><body>IM number {i}</body>"
                           f"</message>".encode() for i in range(n))
        started = time.perf_counter()
        bob.send(payload)
        await bob.drain()
        for d in devices:
            if not await d.wait_messages(n, timeout=300):
                raise RuntimeError(f"{d.resource} got {d.messages} of {n}")
        return n / (time.perf_counter() - started)
    finally:
        for c in (*devices, bob):
            await c.close()
        if component is not None:
            component.terminate()
            await component.wait()
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


MODES = {
    "native": "{server} + its own carbons (native)",
    "mdm": "{server} + MDM bridge/component",
    "mdm-off": "  same, mdm.enabled = false",
}


async def main(kind: str, n: int, rounds: int) -> None:
    results: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(rounds):  # interleaved, so every setup sees the same machine noise
        for mode in MODES:
            results[mode].append(await one_round(kind, mode, n))
    native = statistics.median(results["native"])
    print(f"{kind}: {n} IMs to a 3-device user, {rounds} rounds each, median IMs/s (each device gets all)")
    for mode, label in MODES.items():
        label = label.format(server=kind)
        med = statistics.median(results[mode])
        rounds_txt = ", ".join(f"{x:.0f}" for x in results[mode])
        print(f"  {label:34} {med:8.0f}  ratio {med / native:4.2f}   rounds: {rounds_txt}")
    print("  (mdm.enabled = false: every message still crosses the bridge and back, then is routed")
    print("   natively: the cost of the round trip alone. Goal for MDM: ratio >= 0.8)")


if __name__ == "__main__":
    kind, args = server_option(sys.argv[1:])
    asyncio.run(main(kind, int(args[0]) if args else 5000, int(args[1]) if len(args) > 1 else 3))
