"""Match a received stanza against an expected one, scansion-style, with lxml.

Partial by default: the expected element's attributes and children must be present in the
received one, in any order; extra attributes and children are allowed. ``scansion:strict='true'``
on an element makes that element exact (no extra attributes or children, children in order);
``{scansion:any}`` as an attribute value or text matches anything present.
Our extension: ``h:absent='true'`` (xmlns:h='urn:x-open-mdm:harness') on an expected child
says that no such child may be present, e.g. the notification hint for a third-party client.
"""

from __future__ import annotations

import copy

from lxml import etree

SCANSION = "https://matthewwild.co.uk/projects/scansion"
HARNESS = "urn:x-open-mdm:harness"
ANY = "{scansion:any}"
_STRICT = f"{{{SCANSION}}}strict"
_ABSENT = f"{{{HARNESS}}}absent"
_META = (SCANSION, HARNESS)


def _own_attrs(el: etree._Element) -> dict[str, str]:
    return {k: v for k, v in el.attrib.items() if etree.QName(k).namespace not in _META}


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _is_absent(el: etree._Element) -> bool:
    return el.get(_ABSENT) == "true"


def mismatch(expected: etree._Element, received: etree._Element, path: str = "") -> str | None:
    """None when ``received`` matches ``expected``; otherwise why not, with the element path."""
    here = f"{path}/{etree.QName(expected).localname}"
    if expected.tag != received.tag:
        return f"{here}: expected element {expected.tag}, got {received.tag}"
    strict = expected.get(_STRICT) == "true"
    want, got = _own_attrs(expected), dict(received.attrib)
    for name, value in want.items():
        if name not in got:
            return f"{here}: missing attribute {name}={value!r}"
        if value != ANY and got[name] != value:
            return f"{here}: attribute {name} is {got[name]!r}, expected {value!r}"
    if strict and set(got) - set(want):
        return f"{here}: unexpected attributes {sorted(set(got) - set(want))} (strict)"
    text = _text(expected)
    if text and text != ANY and text != _text(received):
        return f"{here}: text is {_text(received)!r}, expected {text!r}"
    wanted = [c for c in expected if isinstance(c.tag, str)]
    children = [c for c in received if isinstance(c.tag, str)]
    for child in wanted:
        if _is_absent(child) and any(c.tag == child.tag for c in children):
            return f"{here}: {child.tag} must be absent but is present"
    present = [c for c in wanted if not _is_absent(c)]
    if strict and len(present) != len(children):
        return f"{here}: {len(children)} children, expected exactly {len(present)} (strict)"
    # Each expected child matches a distinct received child. Order counts only under strict:
    # servers differ in where they put what they add (ejabberd puts <stanza-id/> before <body/>).
    used: set[int] = set()
    start = 0
    for child in present:
        first_reason = None
        candidates = range(start, len(children)) if strict else range(len(children))
        for j in candidates:
            if j in used:
                continue
            reason = mismatch(child, children[j], here)
            if reason is None:
                used.add(j)
                start = j + 1
                break
            if first_reason is None and children[j].tag == child.tag:
                first_reason = reason
        else:
            return first_reason or f"{here}: no child {child.tag}"
    return None


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
