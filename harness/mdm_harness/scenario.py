"""Scenarios in scansion's ``.scs`` format, rendered through jinja2 first.

A file holds a title (``# …``), optional ``## key: value`` metadata, ``[Client] Name`` blocks
(jid, password, resource), a ``-----`` line, then steps, one per unindented line, with the XML
of ``sends:`` / ``receives:`` indented below. Steps scansion has: ``Name connects``,
``Name sends:``, ``Name receives:`` (the colon may be left out), ``Name disconnects``. Ours (docs/scenarios.md):
``Name receives nothing``, ``Wait 1.5s``, ``Component sets mdm.KEY = VALUE``,
``Component stops`` / ``starts`` / ``pauses`` / ``resumes`` / ``crashes``, ``Component counters:`` with
``NAME: VALUE`` lines (read from its HTTP /metrics). Phones (issue 11): ``Name enables stream
management``, ``Name loses the connection``, ``Name resumes``, ``Name enables push``, and
``Push service receives:`` / ``Push service receives nothing`` (the push app server double).
``#``, ``//`` and ``--`` lines are comments,
before and after the ``-----`` line.

Header lines (``## key: value``) we read: ``matching`` (``scansion``, the default, or ``strict``:
matcher.py), ``server-profile`` (a profile file, relative to the scenario: profiles.py),
``server-modules`` (extra server modules, comma-separated), ``requirements``, ``bridge-ack-timeout``.

Directory defaults: ``## key: value`` lines in a ``_defaults.txt`` beside the scenarios apply to
every scenario there that does not set the key itself (conformance/ sets ``## matching: strict``).

``load_scenarios`` never lets one broken file stop the others: a file that does not parse becomes
a scenario with ``error`` set, which the runner reports as failed.

The template sees ``server`` (``prosody``, ``ejabberd``; empty when parsed without one) and
``server_version`` (servers/kinds.py: compared as numbers, ``server_version >= (24,)``; R9.12), so a
scenario can say where a server really differs: ``{% if server == "ejabberd" %}`` plus a ``#`` line
saying why, which the run prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from .matcher import MATCHING_RULES, SCANSION_RULES
from .servers.kinds import family, server_version
from .streamclient import Login


class ScenarioError(ValueError):
    pass


@dataclass
class ClientSpec:
    name: str
    jid: str
    password: str
    resource: str | None = None
    node: int | None = None  # on a cluster backend: pinned to this node (1-based), else round-robin
    transport: str | None = None  # R9.5: tcp, direct-tls or websocket (a StreamClient); None: aioxmpp
    login: Login = field(default_factory=Login)  # R9.11: classic, or SASL2 + Bind2 (a StreamClient)

    @property
    def user(self) -> str:
        return self.jid.split("@", 1)[0]


@dataclass
class Step:
    line: int
    text: str  # the step line as written, for the transcript
    actor: str | None  # client name, "Component", or None for Wait
    verb: str  # connects, sends, receives, receives-nothing, disconnects, wait, set, stop, start, note
    xml: str = ""
    arg: str | float | None = None


@dataclass
class Scenario:
    name: str
    path: Path | None
    title: str
    clients: dict[str, ClientSpec]
    steps: list[Step]
    meta: dict[str, str] = field(default_factory=dict)
    source: str = ""
    search_path: list[Path] = field(default_factory=list)
    server: str = ""
    error: str = ""  # set when the file does not parse: the run reports it as a failure

    @property
    def matching(self) -> str:
        """``scansion`` (default) or ``strict`` (``## matching: strict``), see matcher.py."""
        return self.meta.get("matching", SCANSION_RULES)

    @property
    def profile_path(self) -> Path | None:
        """``## server-profile: FILE``, relative to the scenario's directory."""
        name = self.meta.get("server-profile")
        if not name:
            return None
        base = self.path.parent if self.path else Path.cwd()
        return (base / name).resolve()

    @property
    def server_modules(self) -> tuple[str, ...]:
        """``## server-modules: pep, vcard4``: extra modules for this scenario's server."""
        raw = self.meta.get("server-modules", "")
        return tuple(m.strip() for m in raw.replace(";", ",").split(",") if m.strip())

    def for_server(self, server: str) -> Scenario:
        """The scenario rendered for one server (its ``{% if server == ... %}`` parts)."""
        if server == self.server or not self.source or self.error:
            return self
        return parse_scenario(self.source, self.name, self.path, self.search_path, server=server)

    @property
    def features(self) -> tuple[str, ...]:
        """What the server must offer (servers.base.FEATURES): from ``## server-features:``, the
        phone verbs used (stream management, push) and the clients' transports (R9.5)."""
        wanted = {f.strip() for f in self.meta.get("server-features", "").replace(";", ",").split(",") if f.strip()}
        for step in self.steps:
            if step.verb in ("sm-enable", "drop", "resume-stream", "resume-fails"):
                wanted.add("stream-management")
            elif step.verb == "push-enable" or step.actor == PUSH_SERVICE:
                wanted.add("push")
        wanted.update(c.transport for c in self.clients.values() if c.transport in ("direct-tls", "websocket"))
        for c in self.clients.values():  # R9.11: SASL2 + Bind2 (and XEP-0198 if a phone enables it inline)
            if c.login.kind == "bind2":
                wanted.add("sasl2")
            if "sm" in c.login.inline:
                wanted.add("stream-management")
        return tuple(sorted(wanted))

    @property
    def bind2(self) -> bool:
        """Whether a client logs in with SASL2 + Bind2 (R9.11)."""
        return any(c.login.kind == "bind2" for c in self.clients.values())

    @property
    def rids(self) -> list[str]:
        """Requirement IDs in the name (R2.1-R2.4-foo -> R2.1, R2.4), then those of ``## requirements``."""
        found = re.findall(r"R\d+(?:\.\d+[a-z]?)?", self.name + " " + self.meta.get("requirements", ""))
        return list(dict.fromkeys(found))


_STEP_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?P<actor>.+?) connects$"), "connects"),
    (re.compile(r"^(?P<actor>.+?) disconnects$"), "disconnects"),
    (re.compile(r"^(?P<actor>.+?) receives:? *nothing$"), "receives-nothing"),
    (re.compile(r"^(?P<actor>.+?) sends:?$"), "sends"),
    (re.compile(r"^(?P<actor>.+?) receives:?$"), "receives"),
    (re.compile(r"^[Ww]ait (?P<arg>\d+(?:\.\d+)?) ?s$"), "wait"),
    (re.compile(r"^(?P<actor>Component) sets (?P<arg>(?:mdm|buffer)\.\w+ *= *\S+)$"), "set"),
    (re.compile(r"^(?P<actor>Component) stops$"), "stop"),
    (re.compile(r"^(?P<actor>Component) starts$"), "start"),
    (re.compile(r"^(?P<actor>Component) pauses$"), "pause"),
    (re.compile(r"^(?P<actor>Component) crashes$"), "crash"),
    (re.compile(r"^(?P<actor>Component) counters:$"), "counters"),
    (re.compile(r"^(?P<actor>Component) resumes$"), "resume"),
    # phones (issue 11): XEP-0198 and XEP-0357
    (re.compile(r"^(?P<actor>.+?) enables stream management$"), "sm-enable"),
    (re.compile(r"^(?P<actor>.+?) loses (?:the|its) connection$"), "drop"),
    (re.compile(r"^(?P<actor>.+?) resumes$"), "resume-stream"),
    # R9.11: the session is gone; the phone logs in afresh (Bind2 in the same round trip where
    # resumption is inline in SASL2)
    (re.compile(r"^(?P<actor>.+?) fails to resume$"), "resume-fails"),
    (re.compile(r"^(?P<actor>.+?) enables push$"), "push-enable"),
]
PUSH_SERVICE = "Push service"  # the push app server double (push.py): an actor that only receives
TRANSPORTS = ("tcp", "direct-tls", "websocket")


def _is_comment(stripped: str) -> bool:
    """``#`` lines, and scansion's other comment forms ``//`` and ``--`` (not a ----- line)."""
    if stripped.startswith(("#", "//")):
        return True
    return stripped.startswith("--") and not re.fullmatch(r"-{3,}", stripped)


def _render(text: str, search_path: list[Path], server: str = "") -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(p) for p in search_path]),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             # scansion's ${Name's JID} must pass through untouched
                             variable_start_string="{{", variable_end_string="}}")
    try:
        # an ejabberd cluster renders as ejabberd; ``cluster`` tells the two apart (R9.8)
        # docker-ejabberd-deb13 runs ejabberd too: the template sees the server and its version
        # (R9.12: ``server_version >= (24,)``), not how it is started
        return env.from_string(text).render(server=family(server), server_version=server_version(server),
                                            cluster=server.endswith("-cluster"))
    except Exception as e:  # any template failure is the scenario's fault: say so, don't crash
        raise ScenarioError(f"template error: {type(e).__name__}: {e}") from None


DEFAULTS_FILE = "_defaults.txt"
_META_LINE = re.compile(r"^##\s*([\w-]+)\s*:\s*(.*?)\s*$")


def directory_defaults(directory: Path) -> dict[str, str]:
    """The ``## key: value`` lines of ``directory/_defaults.txt`` (empty when there is none)."""
    f = directory / DEFAULTS_FILE
    if not f.is_file():
        return {}
    return {m.group(1): m.group(2) for line in f.read_text().splitlines() if (m := _META_LINE.match(line.strip()))}


def parse_scenario(text: str, name: str = "scenario", path: Path | None = None,
                   search_path: list[Path] | None = None, server: str = "") -> Scenario:
    where = str(path) if path else name
    search_path = search_path or ([path.parent] if path else [])
    try:
        rendered = _render(text, search_path, server)
    except ScenarioError as e:
        raise ScenarioError(f"{where}: {e}") from None
    lines = rendered.splitlines()
    title, clients = name, {}
    meta: dict[str, str] = directory_defaults(path.parent) if path else {}
    i = 0

    def err(n: int, msg: str) -> ScenarioError:
        return ScenarioError(f"{where}:{n + 1}: {msg}")

    # --- header and client blocks, up to the ----- line ---
    current: dict[str, str] | None = None
    current_name = ""
    while i < len(lines):
        raw = lines[i]
        s = raw.strip()
        if re.fullmatch(r"-{3,}", s):
            i += 1
            break
        if s.startswith("## ") and ":" in s:
            k, v = s[3:].split(":", 1)
            k, v = k.strip(), v.strip()
            # a scenario that includes another (R9.11-R10-…) keeps its own R-IDs and the other's
            meta[k] = f"{meta[k]}, {v}" if k == "requirements" and meta.get(k) else v
        elif s.startswith("#") and title == name and not s.startswith("##"):
            title = s.lstrip("#").strip() or name
        elif _is_comment(s):
            pass
        elif s.startswith("[Client]"):
            current_name = s[len("[Client]"):].strip()
            if not current_name:
                raise err(i, "[Client] without a name")
            current = {}
            clients[current_name] = current
        elif s:
            if current is None or ":" not in s:
                raise err(i, f"unexpected line before the ----- line: {s!r}")
            k, v = s.split(":", 1)
            current[k.strip()] = v.strip()
        i += 1
    else:
        raise ScenarioError(f"{where}: no ----- line between the clients and the steps")
    if meta.get("matching", SCANSION_RULES) not in MATCHING_RULES:
        raise ScenarioError(f"{where}: ## matching: {meta['matching']!r} is not one of {', '.join(MATCHING_RULES)}")

    specs: dict[str, ClientSpec] = {}
    for cname, fields in clients.items():
        if "jid" not in fields or "password" not in fields:
            raise ScenarioError(f"{where}: [Client] {cname} needs jid and password")
        jid = fields["jid"]
        resource = fields.get("resource")
        if "/" in jid:
            jid, resource = jid.split("/", 1)
        node = fields.get("node")
        if node is not None and not node.isdigit():
            raise ScenarioError(f"{where}: [Client] {cname}: node must be a node number (1, 2, …)")
        transport = fields.get("transport")
        if transport is not None and transport not in TRANSPORTS:
            raise ScenarioError(f"{where}: [Client] {cname}: transport must be one of {', '.join(TRANSPORTS)}")
        try:
            login = Login.parse(fields.get("login"), fields.get("inline"))
        except ValueError as e:
            raise ScenarioError(f"{where}: [Client] {cname}: {e}") from None
        specs[cname] = ClientSpec(cname, jid, fields["password"], resource, int(node) if node else None, transport,
                                  login)

    # --- steps ---
    steps: list[Step] = []
    while i < len(lines):
        raw = lines[i]
        s = raw.strip()
        if not s:
            i += 1
            continue
        if _is_comment(s) and not raw[:1].isspace():
            # Comments tell the story (the walkthroughs' step numbers): kept for the transcript.
            steps.append(Step(i + 1, s.lstrip("#/-").strip(), None, "note"))
            i += 1
            continue
        if raw[:1].isspace():
            raise err(i, f"indented line outside a sends:/receives: block: {s!r}")
        found = next(((m, verb) for pattern, verb in _STEP_PATTERNS if (m := pattern.match(s))), None)
        if found is None:
            raise err(i, f"unknown step {s!r}")
        m, verb = found
        groups = m.groupdict()
        actor = groups.get("actor")
        if actor == PUSH_SERVICE and verb not in ("receives", "receives-nothing"):
            raise err(i, f"the {PUSH_SERVICE} only receives")
        if actor is not None and actor not in ("Component", PUSH_SERVICE) and actor not in specs:
            raise err(i, f"{actor!r} is not a [Client] of this scenario")
        step = Step(i + 1, s, actor, verb)
        if verb == "wait":
            step.arg = float(groups["arg"])
        elif verb == "set":
            step.arg = groups["arg"]
        i += 1
        if verb in ("sends", "receives", "counters"):
            block = []
            while i < len(lines) and (lines[i][:1].isspace() or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            step.xml = "\n".join(block).strip()
            if not step.xml:
                raise err(step.line - 1, f"{s!r} needs lines indented below it")
        steps.append(step)
    return Scenario(name, path, title, specs, steps, meta, text, list(search_path), server)


def load_scenarios(paths: list[Path], select: str | None = None) -> list[Scenario]:
    """Every .scs under ``paths`` (files or directories), sorted by name; ``select`` is a regular
    expression searched in the scenario name. A file that does not parse is returned as a
    scenario with ``error`` set (one broken file fails alone, the others still run); a path that
    does not exist raises ScenarioError."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.rglob("*.scs")))
        elif p.exists():
            files.append(p)
        else:
            raise ScenarioError(f"{p}: no such file or directory")
    pattern = re.compile(select) if select else None
    out = []
    for f in files:
        if pattern and not pattern.search(f.stem):
            continue
        try:
            out.append(parse_scenario(f.read_text(), f.stem, f, [f.parent]))
        except (ScenarioError, OSError, UnicodeDecodeError) as e:
            out.append(Scenario(f.stem, f, f.stem, {}, [], error=str(e) if isinstance(e, ScenarioError)
                                else f"{f}: {type(e).__name__}: {e}"))
    return out
