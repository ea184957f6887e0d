"""Record a bug with your own client, replay it as a test (issue 13, docs/scenarios.md).

Prosody's mod_scansion_record (in Debian's 0.12 package) writes every client session it sees as a
scansion script. Here real clients hold a short multi-device conversation through Prosody with
the MDM bridge and the component (R2.1 fan-out with the R3.4 hint, R2.3 sent copies); the
recording is then replayed unchanged by the harness, on a fresh server, and passes.
"""

from pathlib import Path

import pytest

from mdm_harness.clients import Client
from mdm_harness.component_control import ComponentControl
from mdm_harness.profiles import ServerProfile, load_profile
from mdm_harness.runner import run_scenario
from mdm_harness.scenario import parse_scenario
from mdm_harness.servers import Account, start_server

# A recording holds the values it saw. Timestamps (the <delay/> on the presence of a user's other
# devices) are made constant by a frozen wall clock on both servers; mod_mam stamps each delivered
# message with a random archive id, so both servers leave the archive out.
FIXED_CLOCK = load_profile(Path(__file__).parent / "scansion" / "profiles" / "fixed-clock.toml")
REPLAY = FIXED_CLOCK.merged(ServerProfile(name="no archive", disable=("mam",)))
RECORDING = REPLAY.merged(ServerProfile(name="recording", modules=("scansion_record",)))


async def _until(client: Client, count: int) -> list:
    assert await client.wait_for(count), f"{client.name} got {len(client.received)} stanzas, expected {count}"
    got, client.received = client.received[:count], client.received[count:]
    return got


async def _record_conversation(workdir: Path) -> str:
    accounts = [Account("alice", "pw"), Account("bob", "pw")]
    server = await start_server("prosody", accounts, workdir, profile=RECORDING)
    component = ComponentControl(server)
    clients: list[Client] = []
    try:
        await component.start()

        async def online(name: str, jid: str, carbons: bool, echoes: int) -> Client:
            c = Client(name, jid, "pw")
            clients.append(c)
            await c.connect(server.host, server.c2s_port)
            if carbons:
                await c.send(f"<iq type='set' id='carbons-{name}'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
                (reply,) = await _until(c, 1)
                assert reply.get("type") == "result"
            await c.send("<presence/>")
            await _until(c, echoes)  # its own presence, and those of the user's devices online
            return c

        laptop = await online("laptop", "alice@localhost/laptop", True, 1)
        mobile = await online("mobile", "alice@localhost/mobile", True, 2)
        await _until(laptop, 1)  # the mobile's presence
        bob = await online("bob", "bob@localhost/desktop", False, 1)

        await bob.send("<message to='alice@localhost' type='chat' id='r1'><body>Dinner at eight?</body></message>")
        for device in (laptop, mobile):
            (msg,) = await _until(device, 1)
            assert msg.findtext("{jabber:client}body") == "Dinner at eight?"
        await laptop.send("<message to='bob@localhost' type='chat' id='r2'><body>Yes!</body></message>")
        await _until(bob, 1)
        (copy,) = await _until(mobile, 1)
        assert copy.find("{urn:xmpp:carbons:2}sent") is not None
    finally:
        # The recording ends with everyone online: the recorder would write a device's
        # unavailable presence to the others before that device's "disconnects" line.
        await component.stop()
        await server.stop()
        for c in clients:
            await c.disconnect()
    # The module writes the [Client] blocks to <id>.scs and the steps to <id>.log, and joins them
    # on a clean shutdown; a server stopped by signal (no mod_posix here) leaves both: join them.
    (header,) = list((workdir / "data").rglob("*.scs"))
    steps = header.with_suffix(".log")
    return header.read_text() + (steps.read_text() if steps.exists() else "")


@pytest.mark.asyncio
async def test_a_recorded_conversation_replays_green(tmp_path):
    text = await _record_conversation(tmp_path / "record")
    recorded = tmp_path / "recorded.scs"
    recorded.write_text(text)
    assert "[Client] Romeo" in text and "Romeo's phone" in text and "Juliet" in text
    assert "Dinner at eight?" in text and "urn:x-open-mdm:notify:0" in text and "urn:xmpp:carbons:2" in text

    scenario = parse_scenario(text, "recorded", recorded)
    verbs = [s.verb for s in scenario.steps]
    assert verbs.count("connects") == 3 and verbs.count("sends") >= 5 and verbs.count("receives") >= 8
    lines: list[str] = []
    result = await run_scenario(scenario, "prosody", lines.append, profile=REPLAY)
    assert result.passed, text + "\n" + "\n".join(lines)
    assert result.steps_run == len(scenario.steps)
