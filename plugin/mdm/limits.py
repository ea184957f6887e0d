"""The limits on the component link, in one place (R9.6: no client can knock the link over).

Both directions are bounded, and each side sends only what the other takes
(docs/operations.md has the whole table):

* server -> component: the component reads stanzas of up to ``component.max_stanza_size`` bytes
  (1 MiB) and any depth (what is deeper than ``MAX_DEPTH`` is cut before the parser sees it, below
  libxml2's own limits, and the stanza dropped). It hands the core stanzas of at most
  ``MAX_DEPTH`` levels; a bridge never sends deeper ones (the Prosody bridge hands over messages
  of at most ``mdm_max_depth`` = 1000 levels and caps each ``<events/>`` stanza at 256 KiB or one
  event; everything else takes the server's native path).
* component -> server: Prosody closes a component link that sends it a stanza over
  ``component_stanza_size_limit`` (512 KiB by default). Commands are split into stanzas of at
  most ``SERVER_MAX_STANZA`` bytes, keeping each message's deliveries with their ack whenever
  they fit together.

Repeated bad input is logged through :class:`RateLimitedLog`: one line per kind per minute, with
a count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from . import namespaces as ns

# Levels below the stream root a stanza may nest (the bridges hand over at most 1000 + envelope).
MAX_DEPTH = 2000
# libxml2 2.11+ (lxml 5+) ends a document deeper than this even with huge_tree; the link's parser
# is kept below it (mdm.stream.DepthGuard), so any lxml from 4.9 on reads the same (R9.12).
MAX_PARSER_DEPTH = 2048
# Prosody's default component_stanza_size_limit, less a margin: the largest stanza we send.
SERVER_MAX_STANZA = 512 * 1024 - 1024
# Longest attribute value the codec accepts from a bridge (JIDs are at most 3 × 1023 bytes).
MAX_ATTRIBUTE = 3071


@dataclass
class RateLimitedLog:
    """At most one line per kind per ``period`` seconds; the next line says how many were left out.

    ``log(kind, fmt, *args)`` logs at once the first time a kind is seen, then at most once per
    period, adding the number of occurrences since the last line it wrote.
    """

    logger: logging.Logger
    period: float = 60.0
    level: int = logging.WARNING
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)
    _skipped: dict[str, int] = field(default_factory=dict)

    def log(self, kind: str, fmt: str, *args: object) -> bool:
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.period:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return False
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        if skipped:
            fmt += " (and %d more like it in the last %.0fs)"
            args = (*args, skipped, now - last if last is not None else self.period)
        self.logger.log(self.level, fmt, *args)
        return True

    def reset(self, kind: str) -> None:
        """The condition behind ``kind`` is over: its next occurrence is logged at once."""
        self._last.pop(kind, None)
        self._skipped.pop(kind, None)


def _group_bounds(refs: list[str | None]) -> list[tuple[int, int]]:
    """Runs of children that must stay together: from a ref's first element to its last."""
    last: dict[str, int] = {}
    for i, ref in enumerate(refs):
        if ref is not None:
            last[ref] = i
    bounds: list[tuple[int, int]] = []
    start, reach = 0, -1
    for i, ref in enumerate(refs):
        if ref is not None:
            reach = max(reach, last[ref])
        if i >= reach:
            bounds.append((start, i + 1))
            start = i + 1
    return bounds


def split_commands(stanza: etree._Element, max_bytes: int,
                   on_drop: Callable[[etree._Element, int], None] | None = None) -> list[bytes]:
    """Serialise ``<message><commands>…</commands></message>`` as one or more stanzas of at most
    ``max_bytes`` each, the commands in their order. A message's deliveries and its ack go in
    the same stanza when they fit together; a single command larger than ``max_bytes`` cannot be
    sent at all and is dropped (``on_drop``): the bridge then delivers that message natively
    (an ack without a delivery that reached anyone is a route)."""
    container = stanza[0] if len(stanza) == 1 else None
    if container is None or container.tag != ns.q(ns.BRIDGE, "commands"):
        return [etree.tostring(stanza)]
    children = list(container)
    sizes = [len(etree.tostring(c)) for c in children]
    for c in children:
        container.remove(c)
    envelope = len(etree.tostring(stanza))  # the message and an empty <commands/>
    room = max_bytes - envelope - 64
    parts: list[list[etree._Element]] = [[]]
    used = 0

    def add(i: int) -> None:
        nonlocal used
        if sizes[i] > room:
            if on_drop is not None:
                on_drop(children[i], sizes[i])
            return
        if used + sizes[i] > room and parts[-1]:
            parts.append([])
            used = 0
        parts[-1].append(children[i])
        used += sizes[i]

    for start, end in _group_bounds([c.get("ref") for c in children]):
        group = sum(sizes[start:end])
        if parts[-1] and used + group > room and group <= room:
            parts.append([])  # the whole group fits in a fresh stanza: keep it together
            used = 0
        for i in range(start, end):
            add(i)
    out: list[bytes] = []
    for part in parts:
        if not part:
            continue
        for c in part:
            container.append(c)
        out.append(etree.tostring(stanza))
        for c in part:
            container.remove(c)
    for c in children:  # leave the caller's stanza as it was
        container.append(c)
    return out


_bridge_errors: dict[str, RateLimitedLog] = {}


def log_bridge_error(logger: logging.Logger, host: str, error: str) -> None:
    """R9.6: a bad bridge event is logged at most once a minute per host and kind, with a count
    (100,000 unknown events are not 100,000 lines). The kind is the error's first word: the
    element (``<presence>``) or ``unknown``."""
    rl = _bridge_errors.get(logger.name)
    if rl is None:
        rl = _bridge_errors[logger.name] = RateLimitedLog(logger)
    rl.log(f"{host} {error.split(' ', 1)[0]}", "bridge %s: %s", host, error)
