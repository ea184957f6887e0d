"""Match a received stanza against an expected one, scansion-style, with lxml.

Two rule sets (docs/scenarios.md, "Matching", has them side by side with scansion's):

* ``scansion`` (the default, as scansion does it): the top-level stanza is partial (the expected
  attributes and children must be present; extras allowed). An element that starts a namespace
  of its own (a payload such as ``<query xmlns='jabber:iq:version'>``) is *strict* itself, unless
  ``scansion:strict='false'``; its children are not made strict by that. An explicit
  ``scansion:strict='true'`` or ``'false'`` decides for the element and every descendant that
  does not say otherwise. (This is what Prosody's own scripts rely on: ``<version
  scansion:strict='false'/>`` under a ``scansion:strict='true'`` query, ``scansion:strict='false'``
  on disco#info, MUC ``<x/>`` and MAM ``<fin/>`` payloads, and an upload slot's
  ``<header name='Authorization'></header>`` matching a header with a token in it.)
* ``strict`` (ours, for the conformance scenarios, chosen with ``## matching: strict``): every
  element partial unless it carries ``scansion:strict='true'`` itself (no inheritance).

A strict element has no extra attributes, exactly the expected children and the same text.
Children are matched each to a distinct received child, in any order; under ``scansion:strict``
in our ``strict`` rules they must also come in order (what our scenarios always meant).

Values: ``{scansion:any}`` as an attribute value or text matches anything present;
``{scansion:capture:NAME}`` binds NAME to the received value the first time and must equal it
afterwards (the bindings are the caller's, kept across steps and usable as ``${NAME}``).
Our extension: ``h:absent='true'`` (xmlns:h='urn:x-open-mdm:harness') on an expected child
says that no such child may be present, e.g. the notification hint for a third-party client.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from lxml import etree

SCANSION = "https://matthewwild.co.uk/projects/scansion"
HARNESS = "urn:x-open-mdm:harness"
ANY = "{scansion:any}"
_CAPTURE = re.compile(r"^\{scansion:capture:([^}]+)\}$")
_STRICT = f"{{{SCANSION}}}strict"
_ABSENT = f"{{{HARNESS}}}absent"
_META = (SCANSION, HARNESS)

SCANSION_RULES = "scansion"
STRICT_RULES = "strict"
MATCHING_RULES = (SCANSION_RULES, STRICT_RULES)


def _own_attrs(el: etree._Element) -> dict[str, str]:
    return {k: v for k, v in el.attrib.items() if etree.QName(k).namespace not in _META}


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _is_absent(el: etree._Element) -> bool:
    return el.get(_ABSENT) == "true"


def _namespace(el: etree._Element) -> str | None:
    return etree.QName(el).namespace


@dataclass
class Matcher:
    """One rule set plus the captures made so far (``{scansion:capture:NAME}``)."""
    rules: str = SCANSION_RULES
    captures: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rules not in MATCHING_RULES:
            raise ValueError(f"unknown matching rules {self.rules!r} (available: {', '.join(MATCHING_RULES)})")

    def mismatch(self, expected: etree._Element, received: etree._Element) -> str | None:
        """None when ``received`` matches ``expected`` (captures are then kept); otherwise why not."""
        bound = dict(self.captures)
        reason = self._compare(expected, received, "", None, None, bound)
        if reason is None:
            self.captures = bound
        return reason

    def _strictness(self, expected: etree._Element, inherited: bool | None,
                    parent_ns: str | None) -> tuple[bool, bool | None]:
        """(is this element strict, what its children inherit)."""
        explicit = expected.get(_STRICT)
        if self.rules == STRICT_RULES:
            return explicit == "true", None  # ours: only where it is written, never inherited
        if explicit is not None:
            return explicit == "true", explicit == "true"
        if inherited is not None:
            return inherited, inherited
        own_namespace = parent_ns is not None and _namespace(expected) != parent_ns
        return own_namespace, None  # a payload in its own namespace; not passed on

    def _value(self, want: str, got: str, bound: dict[str, str]) -> bool:
        if want == ANY:
            return True
        m = _CAPTURE.match(want)
        if m is None:
            return want == got
        name = m.group(1)
        if name in bound:
            return bound[name] == got
        bound[name] = got
        return True

    def _compare(self, expected: etree._Element, received: etree._Element, path: str, inherited: bool | None,
                 parent_ns: str | None, bound: dict[str, str]) -> str | None:
        here = f"{path}/{etree.QName(expected).localname}"
        if expected.tag != received.tag:
            return f"{here}: expected element {expected.tag}, got {received.tag}"
        strict, passed_on = self._strictness(expected, inherited, parent_ns)
        want, got = _own_attrs(expected), dict(received.attrib)
        for name, value in want.items():
            if name not in got:
                return f"{here}: missing attribute {name}={value!r}"
            if not self._value(value, got[name], bound):
                return f"{here}: attribute {name} is {got[name]!r}, expected {value!r}"
        if strict and set(got) - set(want):
            return f"{here}: unexpected attributes {sorted(set(got) - set(want))} (strict)"
        text = _text(expected)
        if (text or strict) and not self._value(text, _text(received), bound):
            return f"{here}: text is {_text(received)!r}, expected {text!r}" + (" (strict)" if strict else "")
        wanted = [c for c in expected if isinstance(c.tag, str)]
        children = [c for c in received if isinstance(c.tag, str)]
        for child in wanted:
            if _is_absent(child) and any(c.tag == child.tag for c in children):
                return f"{here}: {child.tag} must be absent but is present"
        present = [c for c in wanted if not _is_absent(c)]
        if strict and len(present) != len(children):
            return f"{here}: {len(children)} children, expected exactly {len(present)} (strict)"
        # Each expected child matches a distinct received child. Order counts only under an
        # explicit scansion:strict='true' in our strict rules: servers differ in where they put
        # what they add (ejabberd puts <stanza-id/> before <body/>).
        in_order = strict and self.rules == STRICT_RULES
        ns = _namespace(expected)
        used: set[int] = set()
        start = 0
        for child in present:
            first_reason = None
            candidates = range(start, len(children)) if in_order else range(len(children))
            for j in candidates:
                if j in used:
                    continue
                trial = dict(bound)
                reason = self._compare(child, children[j], here, passed_on, ns, trial)
                if reason is None:
                    bound.clear()
                    bound.update(trial)
                    used.add(j)
                    start = j + 1
                    break
                if first_reason is None and children[j].tag == child.tag:
                    first_reason = reason
            else:
                return first_reason or f"{here}: no child {child.tag}"
        return None


def mismatch(expected: etree._Element, received: etree._Element, rules: str = STRICT_RULES) -> str | None:
    """One comparison without captures carried over: None when it matches, else why not."""
    return Matcher(rules).mismatch(expected, received)


def parse_expected(xml: str) -> list[etree._Element]:
    """Parse one or more top-level elements in jabber:client, scansion and harness prefixes bound."""
    wrapper = (f"<wrapper xmlns='jabber:client' xmlns:scansion='{SCANSION}' xmlns:h='{HARNESS}'>"
               f"{xml}</wrapper>")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    root = etree.fromstring(wrapper.encode(), parser)
    return [el for el in root if isinstance(el.tag, str)]


def pretty(el: etree._Element) -> str:
    el = copy.deepcopy(el)  # standalone, so unused namespace declarations can go
    etree.cleanup_namespaces(el)
    return etree.tostring(el, pretty_print=True, encoding="unicode").rstrip()
