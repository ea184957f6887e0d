"""JUnit XML for CI: one <testsuite> per server, one <testcase> per scenario, named with its R-IDs."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from .runner import ScenarioResult


def write_junit(results: list[ScenarioResult], path: Path) -> None:
    root = etree.Element("testsuites")
    by_server: dict[str, list[ScenarioResult]] = {}
    for r in results:
        by_server.setdefault(r.server, []).append(r)
    for server, rs in by_server.items():
        suite = etree.SubElement(root, "testsuite", name=f"conformance-{server}", tests=str(len(rs)),
                                 failures=str(sum(not r.passed for r in rs)), errors="0", skipped="0",
                                 time=f"{sum(r.seconds for r in rs):.3f}")
        for r in rs:
            case = etree.SubElement(suite, "testcase", classname=f"conformance.{server}",
                                    name=r.scenario.name, time=f"{r.seconds:.3f}")
            props = etree.SubElement(case, "properties")
            etree.SubElement(props, "property", name="requirements", value=" ".join(r.scenario.rids))
            if not r.passed:
                first = r.failure.splitlines()[0] if r.failure else "failed"
                fail = etree.SubElement(case, "failure", message=first)
                fail.text = r.failure
    path.write_bytes(etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8"))
