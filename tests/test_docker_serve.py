"""``mdm-harness serve --server docker-prosody-deb13`` (issue 16): an admin tries the images by hand.
The server runs from the Prosody image and the component from the component image, each in its
image's container on the host's network; real clients log in, an IM to a two-device user is
served by the component in its container (the notification hint shows it), and Ctrl-C leaves no
container and no process behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from mdm_harness.clients import Client
from mdm_harness.servers import docker as mdm_docker
from mdm_harness.waiting import poll_until

from .docker_engine import ROOT, docker_engine  # noqa: F401 (the fixture)

NOTIFY = "{urn:x-open-mdm:notify:0}notify"


def _metrics(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {k: float(v) for k, _, v in (line.rpartition(" ") for line in text.splitlines())
            if k and not k.startswith("#")}


@pytest.mark.asyncio
async def test_serve_runs_server_and_component_from_their_images(docker_engine):  # noqa: F811
    await asyncio.to_thread(mdm_docker.build_images, ("prosody", "component"), "deb13")
    env = dict(os.environ, DOCKER_HOST=docker_engine.base_url)  # the test session's engine
    proc = subprocess.Popen([sys.executable, "-m", "mdm_harness.cli", "serve", "--server", "docker-prosody-deb13"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    clients: list[Client] = []
    try:
        lines: list[str] = []
        while not any("account" in x and "colin" in x for x in lines):
            # bounded: a serve that hangs before printing fails here (the finally stops it)
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 300)
            assert line, proc.stderr.read()
            lines.append(line)
        text = "".join(lines)
        assert "the open-mdm/component:deb13 image (container" in text, text
        port = int(re.search(r"c2s\s+: 127\.0\.0\.1:(\d+)", text).group(1))
        metrics = re.search(r"metrics\s+: (\S+)", text).group(1)

        async def online(user: str, resource: str, carbons: bool = True) -> Client:
            c = Client(f"{user}/{resource}", f"{user}@localhost", f"{user}-password", resource)
            await c.connect("127.0.0.1", port)
            clients.append(c)
            if carbons:
                await c.enable_carbons()
            await c.send("<presence/>")
            return c
        phone = await online("alice", "phone")
        laptop = await online("alice", "laptop")  # its presence last: the active client (R3.1)
        bob = await online("bob", "desktop", carbons=False)
        await poll_until(lambda: _metrics(metrics).get("MDMSessions") == 2, 30,
                         "the component in its container did not see Alice's two MDM sessions")

        await bob.send("<message to='alice@localhost' type='chat' id='m1'><body>from the images</body></message>")

        def got(c: Client) -> list:
            return [el for el in c.history if el.get("id") == "m1"]
        await poll_until(lambda: got(laptop) and got(phone), 15, "the IM did not reach both devices")
        # served by the component in its container: R3.2 hints, laptop notifies, phone does not
        assert [el.find(NOTIFY).get("value") for el in got(laptop)] == ["true"]
        assert [el.find(NOTIFY).get("value") for el in got(phone)] == ["false"]
    finally:
        for c in clients:
            await c.disconnect()
        proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.to_thread(proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()  # its atexit cleanup does not run then: remove what it started
            for c in docker_engine.client.containers.list(all=True, filters={"label": mdm_docker.LABEL}):
                if f"-{proc.pid}-" in c.name:
                    c.remove(force=True)
            raise
    assert code == 0, proc.stderr.read()
    left = docker_engine.client.containers.list(all=True, filters={"label": mdm_docker.LABEL})
    assert not [c for c in left if f"-{proc.pid}-" in c.name], [c.name for c in left]
