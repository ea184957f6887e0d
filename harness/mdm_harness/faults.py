"""Fault tests and failover measurements (R9.6, R9.9): steady numbered traffic to a user with
several devices, a per-device tally of what arrived, and the time from a fault to "MDM again".

The pieces work against any server the harness starts (``ServerHandle``) and against clusters:
every client is given its own host and c2s port, so a user's devices can sit on different nodes.

    bench = FaultBench(domain, sender=Endpoint("bob", "bob-password", "desktop", host, port),
                       devices=[Endpoint("alice", "alice-password", r, host, p) for r, p in …])
    await bench.connect()
    bench.start_traffic(rate=200)
    await bench.wait_mdm()                 # MDM serves every device (an IM with the hint)
    fault = bench.mark("SIGKILL active")   # the fault's time
    active.kill()
    took = await bench.wait_mdm_again(fault)
    report = await bench.finish()          # stops the traffic, waits for every IM on every device
    print(report.format()); assert report.clean

Also here: ``ComponentProcess`` (a real ``mdm-component`` process from a generated TOML config,
so a SIGKILL is real), ``component_toml`` and ``LinkProxy`` (a loopback TCP proxy whose links a
test cuts, to flap the component's link). Waits are on events and barriers, never guessed sleeps;
the only timer is the traffic's pacing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree

from .ports import free_ports

if TYPE_CHECKING:
    from .servers import ServerHandle

CLIENT = "jabber:client"
NOTIFY = "{urn:x-open-mdm:notify:0}notify"
DELAY = "{urn:xmpp:delay}delay"
BODY = "{jabber:client}body"
STREAMS = "http://etherx.jabber.org/streams"
PREFIX = "IM number "


@dataclass(frozen=True)
class Endpoint:
    """One client: account, resource, and where it connects (any node of a cluster)."""
    user: str
    password: str
    resource: str
    host: str
    port: int


@dataclass
class Arrival:
    seq: int
    at: float  # time.monotonic() of arrival
    notify: str | None  # the hint's value, None without a hint (native delivery, fail-open)
    delayed: bool  # carries <delay/> (flushed from a buffer)


class Device:
    """A minimal XMPP client (plaintext SASL PLAIN, bind, optional carbons) that parses what
    arrives and records every numbered IM. ``changed`` is pulsed on every arrival."""

    def __init__(self, endpoint: Endpoint, domain: str, changed: asyncio.Event | None = None) -> None:
        self.endpoint = endpoint
        self.domain = domain
        self.arrivals: list[Arrival] = []
        self.seen: set[int] = set()
        self.expected_from = 0  # the first IM this device must get (a device added later: after its connect)
        self.changed = changed or asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser: etree.XMLPullParser | None = None
        self._depth = 0
        self._other: asyncio.Queue[etree._Element] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @property
    def name(self) -> str:
        return f"{self.endpoint.user}/{self.endpoint.resource}"

    @property
    def jid(self) -> str:
        return f"{self.endpoint.user}@{self.domain}/{self.endpoint.resource}"

    def _open_stream(self) -> None:
        self._parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True)
        self._depth = 0
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='{CLIENT}' xmlns:stream='{STREAMS}' "
                  f"to='{self.domain}' version='1.0'>")

    async def _expect(self, local: str, timeout: float = 15.0) -> etree._Element:
        while True:
            el = await asyncio.wait_for(self._other.get(), timeout)
            if etree.QName(el).localname == local:
                return el
            if etree.QName(el).localname in ("failure", "error"):
                raise ConnectionError(f"{self.name}: {etree.tostring(el)[:300]!r}")

    async def connect(self, *, carbons: bool = True, inactive: bool = False, presence: bool = True) -> None:
        e = self.endpoint
        self._reader, self._writer = await asyncio.open_connection(e.host, e.port)
        self._task = asyncio.get_running_loop().create_task(self._read())
        self._open_stream()
        await self._expect("features")
        token = base64.b64encode(f"\0{e.user}\0{e.password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        await self._expect("success")
        self._open_stream()  # the reader feeds the new parser from the next byte on
        await self._expect("features")
        self.send(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{e.resource}</resource></bind></iq>")
        await self._expect("iq")
        if carbons:
            self.send("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            await self._expect("iq")
        if presence:
            self.send("<presence/>")
        if inactive:
            self.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        await self.ping()

    async def ping(self) -> None:
        """A round trip to the server: everything sent before it was handled (a barrier)."""
        self.send("<iq type='get' id='ping'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self._expect("iq")

    def send(self, data: str | bytes) -> None:
        assert self._writer is not None
        self._writer.write(data.encode() if isinstance(data, str) else data)

    async def drain(self) -> None:
        assert self._writer is not None
        await self._writer.drain()

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(1 << 16)
                if not data:
                    return
                self._feed(data)
        except (ConnectionError, OSError):
            return
        finally:
            self.closed.set()
            self.changed.set()

    def _feed(self, data: bytes) -> None:
        # The stream restart after SASL <success/> arrives in a later read than the success
        # itself (the server waits for our new header), so one parser per stream is exact.
        parser = self._parser
        assert parser is not None
        parser.feed(data)
        for event, el in parser.read_events():
            if event == "start":
                self._depth += 1
                continue
            self._depth -= 1
            if self._depth != 1:
                continue
            parent = el.getparent()
            if parent is not None:
                parent.remove(el)
            if el.tag == f"{{{CLIENT}}}message":
                self._on_message(el)
            else:
                self._other.put_nowait(el)

    def _on_message(self, el: etree._Element) -> None:
        body = next(iter(el.iter(BODY)), None)
        text = body.text if body is not None else None
        if not text or not text.startswith(PREFIX):
            return
        notify = el.find(NOTIFY)
        seq = int(text[len(PREFIX):])
        self.seen.add(seq)
        self.arrivals.append(Arrival(seq, time.monotonic(),
                                     None if notify is None else notify.get("value"),
                                     next(iter(el.iter(DELAY)), None) is not None))
        self.changed.set()

    def seqs(self) -> list[int]:
        return [a.seq for a in self.arrivals]

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.write(b"</stream:stream>")
                self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


@dataclass
class Tally:
    """What one device got of ``expected`` numbered IMs."""
    device: str
    received: int
    lost: int
    duplicated: int
    out_of_order: int
    hinted: int  # arrivals with the notification hint (delivered by MDM)
    disconnected: bool = False  # its connection ended (e.g. its node was killed): not counted as loss

    @classmethod
    def of(cls, device: Device, sent: int) -> Tally:
        expected = set(range(device.expected_from, sent))
        seqs = [s for s in device.seqs() if s in expected]
        out_of_order, highest = 0, -1
        for s in seqs:
            if s < highest:
                out_of_order += 1
            highest = max(highest, s)
        return cls(device.name, len(seqs), len(expected - set(seqs)), len(seqs) - len(set(seqs)), out_of_order,
                   sum(1 for a in device.arrivals if a.seq in expected and a.notify is not None),
                   device.closed.is_set())


@dataclass
class FaultReport:
    sent: int
    tallies: list[Tally]
    mdm_again: list[tuple[str, float]] = field(default_factory=list)  # (fault, seconds to MDM again)

    @property
    def clean(self) -> bool:
        return all(t.lost == 0 and t.duplicated == 0 for t in self.tallies if not t.disconnected)

    def assert_complete(self) -> None:
        """Every device stayed connected and got every IM, once and in order (R2.4, R9.9): else the
        report. A device that is meant to go (its node is killed) leaves the bench before the fault."""
        for t in self.tallies:
            got = (t.device, t.disconnected, t.lost, t.duplicated, t.out_of_order, t.received)
            assert got == (t.device, False, 0, 0, 0, self.sent), self.format()

    def format(self) -> str:
        lines = [f"  sent {self.sent} IMs"]
        for t in self.tallies:
            lines.append(f"  {t.device:20} received {t.received:6}  lost {t.lost:4}  duplicated {t.duplicated:4}  "
                         f"out of order {t.out_of_order:4}  with hint {t.hinted:6}"
                         + ("  (connection lost)" if t.disconnected else ""))
        for what, seconds in self.mdm_again:
            lines.append(f"  {what}: MDM again after {seconds * 1000:.0f} ms")
        return "\n".join(lines)


class FaultBench:
    """A sender, a user's devices (each on its own host/port), numbered steady traffic, and the
    barriers a fault test waits on. ``domain``: the XMPP domain; ``to``: the address the IMs go
    to (default the devices' bare JID)."""

    def __init__(self, domain: str, sender: Endpoint, devices: list[Endpoint], *, to: str | None = None) -> None:
        self.domain = domain
        self.changed = asyncio.Event()
        self.sender = Device(sender, domain, self.changed)
        self.devices = [Device(e, domain, self.changed) for e in devices]
        self.to = to or f"{devices[0].user}@{domain}"
        self.sent_at: list[float] = []  # monotonic send time of IM n (index n)
        self.mdm_again: list[tuple[str, float]] = []
        self._traffic: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def connect(self) -> None:
        await asyncio.gather(*(d.connect() for d in self.devices))
        await self.sender.connect(carbons=False)

    # --- traffic -----------------------------------------------------------------------------

    def send_im(self) -> int:
        """Send the next numbered IM now; returns its number."""
        n = len(self.sent_at)
        self.sent_at.append(time.monotonic())
        self.sender.send(f"<message to='{self.to}' type='chat' id='f{n}'><body>{PREFIX}{n}</body></message>")
        return n

    def start_traffic(self, rate: float = 200.0) -> None:
        """IMs at ``rate`` per second until finish() / stop_traffic()."""
        self._stop.clear()
        self._traffic = asyncio.get_running_loop().create_task(self._pace(rate))

    async def _pace(self, rate: float) -> None:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while not self._stop.is_set():
            due = int((loop.time() - start) * rate) + 1
            while sent < due:
                self.send_im()
                sent += 1
            await self.sender.drain()
            with contextlib.suppress(TimeoutError):  # pacing: the next 10 ms tick, or a stop
                await asyncio.wait_for(self._stop.wait(), 0.01)

    async def stop_traffic(self) -> int:
        self._stop.set()
        if self._traffic is not None:
            await self._traffic
            self._traffic = None
        await self.sender.drain()
        return len(self.sent_at)

    # --- barriers ----------------------------------------------------------------------------

    async def send_more(self, n: int, timeout: float = 120.0) -> None:
        """Until the running traffic has sent ``n`` more IMs (it keeps its own pace)."""
        target = len(self.sent_at) + n
        await self.until(lambda: len(self.sent_at) >= target, timeout, f"{n} more IMs sent")

    async def until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``condition()`` holds, re-checked on every arrival (event-driven)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            self.changed.clear()
            if condition():
                return
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{what} within {timeout}s; {self._progress()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.2))

    def _progress(self) -> str:
        return "; ".join(f"{d.name}: {len(d.arrivals)} arrivals, last {d.arrivals[-1] if d.arrivals else None}"
                         for d in self.devices) + f"; sent {len(self.sent_at)}"

    def _hinted_since(self, device: Device, since: float) -> Arrival | None:
        for a in device.arrivals:
            if a.notify is not None and a.seq < len(self.sent_at) and self.sent_at[a.seq] >= since:
                return a
        return None

    async def wait_mdm(self, since: float | None = None, timeout: float = 30.0, *,
                       send: bool = True) -> float:
        """Until every device got an IM *sent at or after* ``since`` with the notification hint
        (MDM serves them all); returns when the last one did. Without traffic running, IMs are
        sent here (one per arrival) so something can prove it."""
        since = time.monotonic() if since is None else since
        pending = {d.name for d in self.devices if not d.closed.is_set()}
        last = since

        def done() -> bool:
            nonlocal last
            for d in self.devices:
                if d.name in pending:
                    a = self._hinted_since(d, since)
                    if a is not None:
                        pending.discard(d.name)
                        last = max(last, a.at)
            if pending and send and self._traffic is None and self._probe_due():
                self.send_im()
            return not pending
        await self.until(done, timeout, f"MDM again on {sorted(pending)}")
        return last

    def _probe_due(self) -> bool:
        """Without traffic: the next probe IM once the last one reached every device (or 0.2 s
        passed, e.g. while the server delivers natively and a device misses nothing)."""
        if not self.sent_at:
            return True
        last = len(self.sent_at) - 1
        return time.monotonic() - self.sent_at[-1] > 0.2 or all(last in d.seen for d in self.devices)

    def mark(self, what: str) -> tuple[str, float]:
        """Note the moment of a fault; pass the result to wait_mdm_again()."""
        return what, time.monotonic()

    async def wait_mdm_again(self, fault: tuple[str, float], timeout: float = 60.0,
                             since: float | None = None) -> float:
        """Seconds from the fault until every device got an IM sent after it (or after ``since``,
        e.g. when the component's new link came up) with the hint; recorded for the report."""
        what, at = fault
        last = await self.wait_mdm(max(at, since or at), timeout)
        self.mdm_again.append((what, last - at))
        return last - at

    async def add_device(self, endpoint: Endpoint) -> Device:
        """Connect another device (e.g. one that logs in again on a surviving node): it must get
        every IM sent from the moment its connect completed."""
        device = Device(endpoint, self.domain, self.changed)
        await device.connect()
        device.expected_from = len(self.sent_at)
        self.devices.append(device)
        return device

    async def finish(self, timeout: float = 60.0) -> FaultReport:
        """Stop the traffic, wait until every connected device has every IM it must get (or the
        timeout: then the report shows what is lost), then a ping round trip per device so late
        duplicates show. Devices whose connection ended are reported, flagged, not waited for."""
        sent = await self.stop_traffic()

        def complete(d: Device) -> bool:
            if d.closed.is_set():
                return True
            return len(d.seen) >= sent - d.expected_from and all(n in d.seen for n in range(d.expected_from, sent))
        with contextlib.suppress(TimeoutError):
            await self.until(lambda: all(complete(d) for d in self.devices), timeout, "every IM on every device")
        for d in self.devices:
            if not d.closed.is_set():
                await d.ping()
        return self.report()

    def report(self) -> FaultReport:
        sent = len(self.sent_at)
        return FaultReport(sent, [Tally.of(d, sent) for d in self.devices], list(self.mdm_again))

    async def close(self) -> None:
        self._stop.set()
        if self._traffic is not None:
            self._traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._traffic
        for d in (*self.devices, self.sender):
            await d.close()


# --- the component as a real process ------------------------------------------------------

def component_toml(*, jid: str, secret: str, servers: list[tuple[str, int]], store: str, metrics_port: int,
                   hosts: list[str] | None = None, ha_lock: str = "", node: str = "node1",
                   log_level: str = "info", extra: str = "") -> str:
    """A component config for fault tests: ``servers`` tried in turn (R9.9), ``store`` a SQLite
    path or the shared postgresql:// URL (then the HA lock is on), /metrics on ``metrics_port``."""
    addresses = ", ".join(f'"{h}:{p}"' for h, p in servers)
    text = f"""[component]
jid = "{jid}"
secret = "{secret}"
servers = [{addresses}]
{f'hosts = [{", ".join(repr(h).replace(chr(39), chr(34)) for h in hosts)}]' if hosts else ''}

[buffer]
store = "{store}"

[metrics]
port = {metrics_port}

[report]
node = "{node}"

[log]
level = "{log_level}"
"""
    if ha_lock:
        text += f'\n[ha]\nlock = "{ha_lock}"\n'
    return text + extra


class ComponentProcess:
    """``mdm-component --config FILE`` as its own process (so SIGKILL is real), log to a file,
    /metrics on its own port."""

    @classmethod
    def for_server(cls, server: ServerHandle, workdir: Path, name: str, store: str,
                   servers: list[tuple[str, int]] | None = None, **config: object) -> ComponentProcess:
        """An instance for the harness's ``server``: its component JID and secret, every node's
        component listener on a cluster (R9.8), ``store`` a file or a postgresql:// DSN."""
        ports = getattr(server, "component_ports", [server.component_port])
        return cls(workdir, name, jid=server.component_jid, secret=server.component_secret,
                   servers=servers or [(server.host, p) for p in ports], store=store, hosts=[server.domain],
                   node=name, **config)

    def __init__(self, workdir: Path, name: str, toml: str | None = None, **config: object) -> None:
        """``config``: component_toml's arguments; or ``toml``, the whole file (then
        ``metrics_port`` is its [metrics] port)."""
        self.name = name
        self.metrics_port = int(config.pop("metrics_port", 0) or free_ports(1)[0])  # type: ignore[call-overload]
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(toml if toml is not None else
                                    component_toml(metrics_port=self.metrics_port, **config))  # type: ignore[arg-type]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mdm.cli", "--config", str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def exited(self) -> bool:
        """Started, and ended since."""
        return self.proc is not None and self.proc.returncode is not None

    @property
    def where(self) -> str:
        return f"process {self.pid}, log {self.log_path}"

    async def signal(self, sig: signal.Signals) -> None:
        """e.g. SIGHUP (reload, R1.2), SIGSTOP / SIGCONT (hang, and go on)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def metrics(self) -> dict[str, float] | None:
        """The instance's /metrics, or None if it does not answer (not up yet, or dead)."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        except OSError:
            return None
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 10)
        except (OSError, TimeoutError):
            return None
        finally:
            writer.close()
        out = {}
        for line in data.partition(b"\r\n\r\n")[2].decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def wait_metric(self, name: str, check: Callable[[float], bool], timeout: float = 30.0) -> None:
        """Until /metrics shows ``name`` passing ``check`` (e.g. mdm_component_active == 1)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self.exited():
                code = f" with {self.proc.returncode}" if self.proc is not None else ""
                raise RuntimeError(f"{self.name} exited{code} ({self.where}):\n{self.log_tail()}")
            got = await self.metrics()
            if got is not None and name in got and check(got[name]):
                return
            if loop.time() > deadline:
                raise TimeoutError(f"{self.name}: {name} not as expected within {timeout}s "
                                   f"(last {got and got.get(name)}):\n{self.log_tail()}")
            await asyncio.sleep(0.02)  # polling an HTTP endpoint: no event to wait on

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: the process dies answering nothing more, its sockets closed by the kernel."""
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            await self.kill()


# --- a link a test can cut ------------------------------------------------------------------

class LinkProxy:
    """A loopback TCP proxy in front of ``target``: point the component at ``port``; ``cut()``
    aborts every connection through it at once (both sides), as a network fault would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.accepted = 0
        self.accepted_at = 0.0  # time.monotonic() of the latest link
        self.new_link = asyncio.Event()
        self.bytes = {"to_server": 0, "to_client": 0}  # through the proxy, all links together

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_w)
        self._links.add(pair)
        self.accepted += 1
        self.accepted_at = time.monotonic()
        self.new_link.set()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str) -> None:
            try:
                while data := await src.read(1 << 16):
                    self.bytes[direction] += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()
        try:
            await asyncio.gather(pipe(reader, up_w, "to_server"), pipe(up_r, writer, "to_client"))
        finally:
            self._links.discard(pair)

    def cut(self) -> int:
        """Abort every link through the proxy; returns how many there were."""
        links = list(self._links)
        for a, b in links:
            a.transport.abort()
            b.transport.abort()
        self._links.clear()
        return len(links)

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def start_serving(component: ComponentProcess, bench: FaultBench, rate: float) -> None:
    """The common start of a fault test: ``component`` started and active, the bench's clients
    connected, traffic at ``rate``, and MDM serving every device."""
    await component.start()
    await component.wait_metric("mdm_component_active", lambda v: v == 1)
    await bench.connect()
    bench.start_traffic(rate)
    await bench.wait_mdm()


async def link_cuts(server: ServerHandle, bench: FaultBench, workdir: Path, cuts: int = 30,
                    rate: float = 200.0) -> tuple[FaultReport, int]:
    """R9.6/R9.9: a component (SQLite store) whose link to ``server`` goes through a LinkProxy,
    steady traffic at ``rate``, and ``cuts`` cuts of the link in a row, each as soon as MDM served
    every device again. Returns the report and how many links the proxy accepted (cuts + 1)."""
    proxy = LinkProxy(server.host, server.component_port)
    await proxy.start()
    component = ComponentProcess.for_server(server, workdir, "link-cuts", str(workdir / "link-cuts.sqlite"),
                                            servers=[("127.0.0.1", proxy.port)])
    try:
        await start_serving(component, bench, rate)
        for n in range(cuts):
            fault = bench.mark(f"cut {n + 1}")
            assert proxy.cut() == 1, f"cut {n + 1}: not exactly one link to cut"
            # MDM again = hinted IMs sent over the new link: until the server notices the cut, its
            # bridge may still deliver on a delivery plan (issue 15), with the hint
            await bench.until(lambda links=n + 2: proxy.accepted >= links, 30,
                              f"cut {n + 1}: the component did not reconnect")
            await bench.wait_mdm_again(fault, since=proxy.accepted_at)
        return await bench.finish(), proxy.accepted
    finally:
        await bench.close()
        await component.stop()
        await proxy.close()


def cuts_summary(report: FaultReport) -> str:
    """The report's first lines and the median / max time to MDM again after a cut."""
    times = sorted(s for _, s in report.mdm_again)
    return ("\n".join(report.format().splitlines()[:4])
            + f"\n  MDM again after a cut: median {times[len(times) // 2] * 1000:.0f} ms, "
              f"max {times[-1] * 1000:.0f} ms")
