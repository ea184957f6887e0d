"""Throughput: IMs per second to a user with three devices, MDM component vs the server's own carbons.

Bob sends N IMs to alice@localhost as fast as he can; Alice has three devices with carbons on and
equal priority, so natively all three are RFC 6121 recipients and with MDM all three are fanned
out. We time from the first write to the last device holding all N. Both setups run here, one
after the other, on a fresh server (plaintext, no rate limits); the component runs as its own
process (`mdm-component`), as in production. Also printed: the server's CPU per IM (from /proc)
over the burst. Issue 15's goal: >= 0.9 of native on Prosody, >= 1.0 on ejabberd, archive off
and on (--archive on: Prosody's mod_mam on its internal storage, ejabberd's mod_mam on
PostgreSQL, set up as in bench/latency.py).
Run: .venv/bin/python bench/throughput.py [--server prosody|ejabberd] [--archive on|off] [N] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

from latency import cpu_seconds, start_setup
from rawclient import RawClient

from mdm_harness.servers.base import server_option


async def one_round(kind: str, mode: str, n: int, archive: bool) -> tuple[float, float]:
    """IMs/s, and the server's CPU µs per IM over the burst."""
    mdm = mode != "native"
    # native: the server's own carbons (no CSI module: nobody is in the background here)
    setup = await start_setup(kind, mdm, archive, mdm_enabled=mode != "mdm-off", csi=False)
    server = setup.server
    devices = [RawClient("alice", "alice-password", r) for r in ("laptop", "mobile", "tablet")]
    bob = RawClient("bob", "bob-password", "desktop")
    try:
        for d in devices:
            await d.connect(server.c2s_port)
            d.messages = 0
            d.start_counting()
        await bob.connect(server.c2s_port, carbons=False)
        payload = b"".join(f"<message to='alice@localhost' type='chat' id='m{i}'><body>IM number {i}</body>"
                           f"</message>".encode() for i in range(n))
        cpu0 = cpu_seconds(server.pid)
        started = time.perf_counter()
        bob.send(payload)
        await bob.drain()
        for d in devices:
            if not await d.wait_messages(n, timeout=300):
                raise RuntimeError(f"{d.resource} got {d.messages} of {n}")
        rate = n / (time.perf_counter() - started)
        return rate, (cpu_seconds(server.pid) - cpu0) / n * 1e6
    finally:
        for c in (*devices, bob):
            await c.close()
        await setup.close()


MODES = {
    "native": "{server} + its own carbons (native)",
    "mdm": "{server} + MDM bridge/component",
    "mdm-off": "  same, mdm.enabled = false",
}


async def main(kind: str, n: int, rounds: int, archive: bool) -> None:
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    for _ in range(rounds):  # interleaved, so every setup sees the same machine noise
        for mode in MODES:
            results[mode].append(await one_round(kind, mode, n, archive))
    native = statistics.median(r for r, _ in results["native"])
    native_cpu = statistics.median(c for _, c in results["native"])
    arch = {"prosody": "mod_mam, internal storage", "ejabberd": "mod_mam, SQL on PostgreSQL"}[kind]
    print(f"{kind}, archive {'on (' + arch + ')' if archive else 'off'}: {n} IMs to a 3-device user, "
          f"{rounds} rounds each, median IMs/s (each device gets all); server CPU µs per IM")
    for mode, label in MODES.items():
        label = label.format(server=kind)
        med = statistics.median(r for r, _ in results[mode])
        cpu = statistics.median(c for _, c in results[mode])
        rounds_txt = ", ".join(f"{x:.0f}" for x, _ in results[mode])
        print(f"  {label:34} {med:8.0f}  ratio {med / native:4.2f}   CPU {cpu:5.0f} µs/IM ({cpu / native_cpu:4.2f}x)"
              f"   rounds: {rounds_txt}")
    print("  (mdm.enabled = false: the component tells the bridge to leave delivery to the server's own")
    print("   carbons, R1.3: the bridge's hooks and session reports alone)")
    print(f"  (load average at the end: {Path('/proc/loadavg').read_text().split()[0]})")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # children the harness reaps itself
    kind, args = server_option(sys.argv[1:])
    archive = False
    if args[:1] == ["--archive"] and len(args) > 1:
        archive, args = args[1] == "on", args[2:]
    asyncio.run(main(kind, int(args[0]) if args else 5000, int(args[1]) if len(args) > 1 else 3, archive))
