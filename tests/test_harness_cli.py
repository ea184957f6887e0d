"""The harness CLI end to end: exit code, summary line, JUnit XML with R-IDs."""

import subprocess
import sys
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).parent.parent


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mdm_harness.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_run_writes_junit_and_summary(tmp_path):
    out = tmp_path / "out.xml"
    r = harness("run", "--server", "prosody", "--select", "^R2.5", "--junit", str(out), "conformance")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "1 passed, 0 failed"
    case = etree.parse(str(out)).find(".//testcase")
    assert case.get("name").startswith("R2.5") and case.find("failure") is None
    assert "R2.5" in case.find(".//property").get("value")


def test_failing_scenario_exits_1_and_shows_both_sides(tmp_path):
    bad = tmp_path / "R0-wrong.scs"
    bad.write_text("# wrong on purpose\n[Client] A\n\tjid: alice@localhost\n\tpassword: alice-password\n"
                   "-----\nA connects\nA sends:\n\t<presence/>\nA receives:\n\t<presence type='probe'/>\n")
    out = tmp_path / "out.xml"
    r = harness("run", "--junit", str(out), str(bad))
    assert r.returncode == 1
    assert "expected" in r.stdout and "received" in r.stdout and "0 passed, 1 failed" in r.stdout
    assert etree.parse(str(out)).find(".//failure") is not None


def test_unparsable_file_fails_alone_and_the_run_goes_on(tmp_path):
    bad = tmp_path / "R0-bad.scs"
    bad.write_text("[Client] A\n\tjid: a@localhost\n\tpassword: p\n-----\nA dances\n")
    good = tmp_path / "R0-good.scs"
    good.write_text("# fine\n[Client] A\n\tjid: alice@localhost\n\tpassword: alice-password\n-----\nA connects\n")
    out = tmp_path / "out.xml"
    r = harness("run", "--junit", str(out), str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "unknown step 'A dances'" in r.stdout and "FAIL R0-bad" in r.stdout and "PASS R0-good" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "1 passed, 1 failed"
    cases = {c.get("name"): c for c in etree.parse(str(out)).iter("testcase")}
    assert set(cases) == {"R0-bad", "R0-good"}
    assert "unknown step" in cases["R0-bad"].find("failure").get("message")
    assert cases["R0-good"].find("failure") is None


def test_missing_path_or_profile_is_a_usage_error(tmp_path):
    r = harness("run", str(tmp_path / "nowhere.scs"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = harness("run", "--server-profile", str(tmp_path / "nowhere.toml"), "conformance")
    assert r.returncode == 2 and "nowhere.toml" in r.stderr and "Traceback" not in r.stderr


def test_serve_prints_accounts_and_ctrl_c_leaves_nothing_behind():
    import re
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "mdm_harness.cli", "serve"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        while not any("account" in x and "colin" in x for x in lines):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        text = "".join(lines)
        assert "alice@localhost  password alice-password" in text
        log_file = Path(re.search(r"server log   : (\S+)", text).group(1))
        assert log_file.exists()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not log_file.parent.exists(), "the temp dir is removed"
        still = [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(log_file.parent).encode() in _read(p)]
        assert not still, "the server process is gone"
    finally:
        if proc.poll() is None:
            proc.kill()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended while we looked
        return b""
