"""Run scenarios against a real server with the component, one fresh server per scenario.

Each scenario gets its own server process, data dir and accounts (nothing leaks between
scenarios: offline messages, archives, rosters), and a fresh component: in the harness's event
loop, or as its own process or container (component_remote.py), the same steps either way. Every step
prints one line as it runs; a failure shows expected and received XML side by side.

``sends`` is a round trip on the sending stream: after the stanza, an XEP-0199 ping to the server
is answered before the step completes, so the next step starts only once the server has taken
what was sent (two sends on two connections cannot overtake each other). A client in the
background (CSI inactive) gets no iq (an iq would flush its buffer, R5.3a): after its
``<inactive/>`` the step waits until the component has seen it, as ClientPool.barrier does.

``receives`` follows the scenario's matching rules (matcher.py): under ``scansion`` (default) a
received stanza that matches none of the step's expected elements is skipped, as scansion does;
under ``strict`` (``## matching: strict``, our conformance scenarios) it fails the step.
``receives nothing`` is strict under both.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from .clients import DEFAULT_TIMEOUT, Client, ClientPool
from .component_control import ControlledComponent
from .component_remote import control_for
from .matcher import HARNESS, SCANSION, STRICT_RULES, Matcher, parse_expected, pretty
from .profiles import ServerProfile, load_profile
from .push import SECRET as PUSH_SECRET
from .push import PushService
from .scenario import PUSH_SERVICE, Scenario, Step
from .servers import Account, ServerHandle, start_server
from .streamclient import StreamClient
from .waiting import poll_until

log = logging.getLogger(__name__)


class StepFailed(Exception):
    pass


@dataclass
class ScenarioResult:
    scenario: Scenario
    server: str
    passed: bool
    seconds: float
    failure: str = ""
    steps_run: int = 0
    transcript: list[str] = field(default_factory=list)


def side_by_side(left: str, right: str, titles: tuple[str, str] = ("expected", "received")) -> str:
    lw = max([len(titles[0]), *map(len, left.splitlines())])
    rows = [f"{titles[0]:<{lw}} | {titles[1]}", f"{'-' * lw}-+-{'-' * len(titles[1])}"]
    a, b = left.splitlines(), right.splitlines()
    for i in range(max(len(a), len(b))):
        rows.append(f"{a[i] if i < len(a) else '':<{lw}} | {b[i] if i < len(b) else ''}")
    return "\n".join(rows)


def push_node(client_name: str) -> str:
    """The XEP-0357 node a client registers with the push service double: ``${Name's push node}``."""
    return re.sub(r"[^a-z0-9]+", "-", client_name.lower()).strip("-") + "-push"


class ScenarioRun:
    def __init__(self, scenario: Scenario, server: ServerHandle, component: ControlledComponent,
                 emit: Callable[[str], None], transcript: bool, push: PushService | None = None) -> None:
        self.scenario = scenario
        self.server = server
        self.component = component
        self.push = push
        # issue 11: with XEP-0198 on the server (aioxmpp would enable it itself) or push, every
        # client owns its stream (streamclient.py)
        self.pool = ClientPool(server, component.sees_inactive,
                               own_streams=bool({"stream-management", "push"} & set(scenario.features)))
        self.emit = emit
        self.transcript = transcript
        self.matcher = Matcher(scenario.matching)  # its captures live as long as the scenario
        self._shown: list[str] = []  # XML of the current step, printed under its step line

    def _vars(self, text: str) -> str:
        """``${Name's full JID}``, ``${Name's JID}`` / ``${Name's bare JID}``, ``${Name's resource}``,
        ``${Name's username}``, ``${Name's host}``; ``${NAME}`` for a ``{scansion:capture:NAME}``."""
        def sub(m: re.Match[str]) -> str:
            inner = m.group(1)
            prop = re.fullmatch(r"(.+)'s (full JID|bare JID|JID|resource|username|host|push node)", inner)
            if prop is None:
                if inner in self.matcher.captures:
                    return self.matcher.captures[inner]
                raise StepFailed(f"{m.group(0)}: neither a client's property nor a captured value")
            name, what = prop.groups()
            spec = self.scenario.clients.get(name)
            if spec is None:
                raise StepFailed(f"{m.group(0)}: no client {name!r}")
            if what in ("full JID", "resource"):
                client = self.pool.clients.get(name)
                if client is None or not client.full_jid:
                    raise StepFailed(f"{name} has no full JID before it connects")
                return client.full_jid if what == "full JID" else client.full_jid.partition("/")[2]
            if what == "username":
                return spec.user
            if what == "push node":
                return push_node(name)
            if what == "host":
                return spec.jid.partition("@")[2]
            return spec.jid
        return re.sub(r"\$\{([^}]+)\}", sub, text)

    async def _round_trip(self, name: str, sent: list[etree._Element]) -> None:
        """The sends barrier: the server has handled what ``name`` sent before the step ends."""
        client = self.pool[name]
        if not client.connected:
            return
        if not client.inactive:
            # The server may end the stream instead of answering (an account removal): that, too,
            # says it has handled what was sent.
            ping = asyncio.ensure_future(client.iq(
                f"<iq type='get' id='{{id}}' to='{self.server.domain}'><ping xmlns='urn:xmpp:ping'/></iq>"))
            try:
                await poll_until(lambda: ping.done() or not client.stream_established, DEFAULT_TIMEOUT,
                                 f"{name}: the server did not answer a ping after the send", interval=0.005)
            finally:
                if not ping.done():
                    ping.cancel()
            if ping.done() and not ping.cancelled():
                ping.result()
            return
        # In the background: no iq (R5.3a). After its <inactive/>, wait for the component to see it.
        if any(etree.QName(el).localname == "inactive" for el in sent):
            await self._sees_inactive(client)

    async def _sees_inactive(self, client: Client | StreamClient) -> None:
        """Until the component has seen ``client`` go to the background (a nonza, or inline in a
        Bind2 request, R9.11): nothing answers either."""
        sees = self.pool.component_sees_inactive
        if sees is not None:
            await poll_until(lambda: sees(client.full_jid), DEFAULT_TIMEOUT,
                             f"the component did not see {client.name}'s <inactive/>", interval=0.005)

    def _show(self, label: str, el: etree._Element) -> None:
        if self.transcript:
            self._shown.extend(f"        {label} {line}" for line in pretty(el).splitlines())

    async def step(self, step: Step) -> None:
        v = step.verb
        if v == "connects":
            spec = self.scenario.clients[step.actor]
            # R9.8: on a cluster, clients sit on the nodes in [Client] order unless pinned
            place = spec.node - 1 if spec.node else list(self.scenario.clients).index(spec.name)
            await self.pool.connect(spec.name, spec.jid, spec.password, spec.resource, place, spec.transport,
                                    spec.login)
            client = self.pool[spec.name]
            if client.inactive:  # R9.11: it chose <inactive/> inline; wait until the component saw it
                await self._sees_inactive(client)
        elif v == "disconnects":
            await self.pool.disconnect(step.actor)
        elif v == "sends":
            client = self.pool[step.actor]
            xml = self._vars(step.xml)
            sent = []
            for el in map(copy.deepcopy, parse_expected(xml)):  # standalone: own ns declarations
                for attr in [a for a in el.attrib if etree.QName(a).namespace in (SCANSION, HARNESS)]:
                    del el.attrib[attr]
                etree.cleanup_namespaces(el)
                self._show(">>", el)
                await client.send(etree.tostring(el))
                sent.append(el)
            await self._round_trip(step.actor, sent)
        elif v == "receives":
            await self._receives(step)
        elif v in ("sm-enable", "drop", "resume-stream", "resume-fails", "push-enable"):
            await self._phone(step)
        elif v == "receives-nothing":
            await self.pool.barrier()
            client = self.push if step.actor == PUSH_SERVICE else self.pool[step.actor]
            if client is self.push and self.push is not None:
                await self.push.barrier()  # and what the server pushed meanwhile has arrived
            if client.received:
                got = client.received.pop(0)
                raise StepFailed(f"{step.actor} received a stanza, expected nothing:\n{pretty(got)}")
        elif v == "wait":
            await asyncio.sleep(float(step.arg))  # only for time windows the scenario is about
        elif v == "set":
            await self.component.set(str(step.arg))
            if str(step.arg).replace(" ", "").startswith("mdm.enabled=") and await self.component.serving():
                # R1.2: the switch goes to the bridges as a command (<mode/>); a round trip through
                # the component from every client is answered after it, so the next step finds
                # the bridges switched (the link is in order)
                await self.pool.barrier()
        elif v == "stop":
            await self.component.stop()
        elif v == "start":
            await self.component.start()
        elif v == "counters":
            await self.pool.barrier()
            await self._counters(step)
        elif v == "crash":
            await self.component.crash()
        elif v == "pause":
            await self.component.pause()
        elif v == "resume":
            await self.component.resume()
        else:
            raise StepFailed(f"unknown verb {v}")

    async def _phone(self, step: Step) -> None:
        """Issue 11: what a phone does with its stream (XEP-0198) and its push registration
        (XEP-0357). Each step ends once the component has seen its effect, when one is serving."""
        client = self.pool[step.actor]
        if not isinstance(client, StreamClient):
            raise StepFailed(f"{step.actor} does not own its stream (needs stream management on the server)")
        serving = await self.component.serving()
        jid = client.full_jid
        if step.verb == "sm-enable":
            if client.sm_id is not None and "sm" in client.login.inline:
                self._shown.append("        (already enabled at login: a Bind2 phone)")  # R9.11
            else:
                await client.enable_sm()
        elif step.verb == "drop":
            await client.lose_connection()
            if serving:  # the server hibernated the session and the bridge said so (R5.7)
                await poll_until(lambda: self._hibernated(jid, True),
                                 DEFAULT_TIMEOUT, f"{step.actor}'s session did not hibernate", interval=0.005)
        elif step.verb == "resume-stream":
            await client.resume()
            if serving:
                await poll_until(lambda: self._hibernated(jid, False),
                                 DEFAULT_TIMEOUT, f"the component did not see {step.actor} resume", interval=0.005)
            if client.resumed_inline:  # R9.11: what the transcript shows of a modern login
                how = " with a FAST token" if client.used_fast else ""
                self._shown.append(f"        (resumed inline in SASL2{how})")
        elif step.verb == "resume-fails":
            # R9.11: the old session is gone; the phone's fresh session starts clean
            if await client.resume(fresh_on_failure=True):
                raise StepFailed(f"{step.actor} resumed its session; expected the resumption to fail")
            if client.inactive:
                await self._sees_inactive(client)
        elif step.verb == "push-enable":
            if not self.server.push_jid:
                raise StepFailed("the server was started without push")
            await client.enable_push(self.server.push_jid, push_node(step.actor))
            if serving:  # the bridge reports registrations (R7.1), and the push veto needs them (R3.6)
                await poll_until(lambda: self.component.push_registered(client.bare_jid), DEFAULT_TIMEOUT,
                                 f"the component did not see {step.actor}'s push registration", interval=0.005)

    async def _hibernated(self, jid: str, phantom: bool) -> bool:
        """Whether the component sees ``jid`` hibernated (``phantom``) or live again; a session it
        no longer knows counts as both (the server may have ended it)."""
        s = await self.component.session(jid)
        return s is None or s.phantom == phantom

    async def _counters(self, step: Step) -> None:
        """R6: the counters as an admin's Prometheus sees them, from the component's /metrics."""
        metrics = await fetch_metrics(self.component.config.metrics_bind, self.component.config.metrics_port)
        problems = []
        for line in step.xml.splitlines():
            name, _, want = (p.strip() for p in line.partition(":"))
            if not name:
                continue
            got = metrics.get(name)
            if got is None:
                problems.append(f"{name}: not on /metrics")
            elif want.startswith(">") and not got > float(want[1:]) or not want.startswith(">") and got != float(want):
                problems.append(f"{name} is {got:g}, expected {want}")
            else:
                self._shown.append(f"        {name} = {got:g}")
        if problems:
            raise StepFailed("counters differ:\n  " + "\n  ".join(problems))

    async def _receives(self, step: Step) -> None:
        client = self.push if step.actor == PUSH_SERVICE else self.pool[step.actor]
        if client is None:
            raise StepFailed("no push service in this run")
        expected = parse_expected(self._vars(step.xml))
        strict = self.matcher.rules == STRICT_RULES
        # Several elements in one block may arrive in any order (fan-out has no defined order).
        remaining = list(expected)
        skipped: list[tuple[etree._Element, etree._Element, str]] = []  # (got, closest expected, why)
        deadline = asyncio.get_running_loop().time() + DEFAULT_TIMEOUT
        while remaining:
            got = await client.next_stanza(max(0.0, deadline - asyncio.get_running_loop().time()))
            if got is None:
                message = (f"{step.actor} received nothing matching within {DEFAULT_TIMEOUT}s; expected:\n"
                           + "\n".join(pretty(e) for e in remaining))
                if skipped:
                    other, exp, reason = skipped[-1]
                    message += (f"\n{len(skipped)} other stanza(s) arrived and matched nothing; the last: {reason}\n"
                                + side_by_side(pretty(exp), pretty(other)))
                raise StepFailed(message)
            reasons = []
            for exp in remaining:
                reason = self.matcher.mismatch(exp, got)
                if reason is None:
                    remaining.remove(exp)
                    self._show("<<", got)
                    break
                reasons.append((exp, reason))
            else:
                exp, reason = reasons[0]
                if strict:
                    raise StepFailed(f"{step.actor} received a stanza that does not match: {reason}\n"
                                     + side_by_side(pretty(exp), pretty(got)))
                skipped.append((got, exp, reason))  # scansion: unexpected stanzas are passed over
                self._show("<< (skipped, matches nothing expected)", got)

    async def run(self) -> int:
        n = 0
        try:
            for step in self.scenario.steps:
                n += 1
                if step.verb == "note":
                    self.emit(f"  # {step.text}")
                    continue
                try:
                    await self.step(step)
                except StepFailed:
                    self.emit(f"    FAIL {step.text}  (line {step.line})")
                    raise
                except Exception as e:
                    self.emit(f"    FAIL {step.text}  (line {step.line})")
                    raise StepFailed(f"{type(e).__name__}: {e}") from e
                self.emit(f"    ok   {step.text}")
                for line in self._shown:
                    self.emit(line)
                self._shown.clear()
        finally:
            await self.pool.close()
        return n


async def fetch_metrics(host: str, port: int) -> dict[str, float]:
    """GET /metrics and parse the Prometheus text format (name value per line)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), DEFAULT_TIMEOUT)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise StepFailed(f"/metrics answered {head.splitlines()[0]!r}")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def accounts_of(scenarios: list[Scenario]) -> list[Account]:
    seen: dict[str, Account] = {}
    for sc in scenarios:
        for spec in sc.clients.values():
            prev = seen.get(spec.user)
            if prev and prev.password != spec.password:
                raise ValueError(f"{sc.name}: {spec.user} has two different passwords")
            seen[spec.user] = Account(spec.user, spec.password)
    return list(seen.values())


def scenario_profile(scenario: Scenario, base: ServerProfile | None = None) -> ServerProfile:
    """The run's profile, then the scenario's ``## server-profile``, then its ``## server-modules``."""
    profile = base or ServerProfile()
    if scenario.profile_path is not None:
        profile = profile.merged(load_profile(scenario.profile_path))
    if scenario.server_modules:
        profile = profile.merged(ServerProfile(modules=scenario.server_modules))
    return profile


async def run_scenario(scenario: Scenario, server_kind: str, emit: Callable[[str], None],
                       transcript: bool = False, keep: bool = False,
                       profile: ServerProfile | None = None, component_process: bool = False) -> ScenarioResult:
    """``component_process``: ``mdm-component`` as a process of its own (component_remote.py);
    the docker backends always run it in its image's container."""
    started = time.monotonic()
    scenario = scenario.for_server(server_kind)
    emit(f"{scenario.name} [{server_kind}]: {scenario.title}")
    result = ScenarioResult(scenario, server_kind, False, 0.0)
    if scenario.error:  # a file that does not parse fails alone; the run goes on
        result.failure = scenario.error
        emit(f"      {scenario.error}")
        emit(f"  FAIL {scenario.name} (does not parse)")
        return result
    workdir = Path(tempfile.mkdtemp(prefix=f"mdm-{server_kind}-"))
    server = None
    component = None
    push = None
    try:
        options: dict[str, object] = {"bridge_ack_timeout": float(scenario.meta["bridge-ack-timeout"])} \
            if "bridge-ack-timeout" in scenario.meta else {}
        options["profile"] = scenario_profile(scenario, profile)
        if scenario.features:
            options["features"] = scenario.features
        if "hibernation-timeout" in scenario.meta:  # R5.7/R5.4: seconds a hibernated session is kept
            options["hibernation_timeout"] = int(scenario.meta["hibernation-timeout"])
        server = await start_server(server_kind, accounts_of([scenario]), workdir, **options)
        component = control_for(server, own_process=component_process)
        await component.start()
        if "push" in scenario.features:
            push = PushService(server.push_jid, PUSH_SECRET, server.host, server.push_port)
            await push.start()
        run = ScenarioRun(scenario, server, component, emit, transcript, push)
        result.steps_run = await run.run()
        result.passed = True
    except StepFailed as e:
        result.failure = str(e)
    except Exception as e:  # a broken set-up fails the scenario, it does not stop the run
        log.debug("scenario %s crashed", scenario.name, exc_info=True)
        result.failure = f"{type(e).__name__}: {e}"
    finally:
        if component is not None:
            await component.stop()
        if push is not None:
            await push.stop()
        if server is not None:
            if not result.passed:
                tail = server.log_tail(15)
                if tail:
                    result.failure += f"\n--- {server_kind} log (last lines) ---\n{tail}"
            await server.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = time.monotonic() - started
    if not result.passed:
        for line in result.failure.splitlines():
            emit(f"      {line}")
    emit(f"  {'PASS' if result.passed else 'FAIL'} {scenario.name} ({result.seconds:.1f}s)")
    return result
