"""``mdm-harness``: run conformance scenarios, or serve a server with the component for people.

  mdm-harness run [--server prosody|ejabberd] [--server-profile FILE] [--select PATTERN] [--junit FILE]
                  [--transcript] [PATHS...]
  mdm-harness serve [--server prosody|ejabberd] [--server-profile FILE] [--keep] [PATHS...]

A scenario file that does not parse is reported as a failed scenario (in the output and in the
JUnit file); the others still run. Exit codes: 0 all passed, 1 some failed, 2 usage errors (no
such path, no scenario selected, an unreadable server profile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .component_remote import RemoteComponentControl, control_for
from .environment import DEFAULT_ACCOUNTS
from .junit import write_junit
from .profiles import ProfileError, ServerProfile, load_profile
from .runner import accounts_of, run_scenario
from .scenario import ScenarioError, load_scenarios
from .servers import start_server
from .servers.base import SERVER_KINDS as SERVERS


def _emit(line: str) -> None:
    print(line, flush=True)


def _profile(args: argparse.Namespace) -> ServerProfile | None:
    profile = None
    for path in args.server_profile or []:
        loaded = load_profile(Path(path))
        profile = loaded if profile is None else profile.merged(loaded)
    return profile


async def _run(args: argparse.Namespace) -> int:
    profile = _profile(args)
    if args.cluster_nodes is not None:
        if args.cluster_nodes < 2:
            print("mdm-harness: --cluster-nodes takes a whole number of at least 2", file=sys.stderr)
            return 2
        os.environ["MDM_CLUSTER_NODES"] = str(args.cluster_nodes)  # read where the cluster starts
    scenarios = load_scenarios([Path(p) for p in args.paths], args.select)
    if not scenarios:
        print("mdm-harness: no scenario selected", file=sys.stderr)
        return 2
    results = []
    for server in args.server:
        for sc in scenarios:
            results.append(await run_scenario(sc, server, _emit, transcript=args.transcript,
                                              keep=args.keep, profile=profile,
                                              component_process=args.component_process))
    if args.junit:
        write_junit(results, Path(args.junit))
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    if failed:
        _emit("failed: " + ", ".join(f"{r.scenario.name} [{r.server}]" for r in results if not r.passed))
    _emit(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


async def _serve(args: argparse.Namespace) -> int:
    accounts = accounts_of(load_scenarios([Path(p) for p in args.paths])) if args.paths else DEFAULT_ACCOUNTS
    workdir = Path(tempfile.mkdtemp(prefix="mdm-serve-"))
    server = await start_server(args.server[0], accounts, workdir, profile=_profile(args))
    # docker-*: the component from its image too (its container, the host's network), so the
    # images can be tried end to end; otherwise in this process, as scenario runs have it
    component = control_for(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await component.start()
        _emit(f"{server.kind} is running with the MDM component (Ctrl-C stops everything)")
        _emit(f"  XMPP domain  : {server.domain}")
        _emit(f"  c2s          : {server.host}:{server.c2s_port} (plaintext, PLAIN/SCRAM allowed)")
        _emit(f"  component    : {server.component_jid} on {server.host}:{server.component_port}")
        _emit(f"  group chat   : {server.muc_domain}")
        if isinstance(component, RemoteComponentControl) and component.process is not None:
            _emit(f"  component in : {component.process.where}")
        cfg = component.config
        _emit(f"  metrics      : http://{cfg.metrics_bind}:{cfg.metrics_port}/metrics")
        _emit(f"  admin page   : http://{cfg.admin_bind}:{cfg.admin_port}/?token={cfg.admin_token}")
        _emit(f"  server log   : {server.log_file}")
        for a in accounts:
            _emit(f"  account      : {a.user}@{server.domain}  password {a.password}")
        await stop.wait()
    finally:
        await component.stop()
        await server.stop()
        if args.keep:
            _emit(f"kept the server's directory (data, log, config): {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mdm-harness", description="MDM conformance harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run scenarios (.scs files or directories)")
    run.add_argument("--server", action="append", choices=SERVERS,
                     help="server to run against (repeatable; default prosody)")
    run.add_argument("--server-profile", action="append", metavar="FILE",
                     help="extra server modules, options and components (TOML; repeatable; docs/scenarios.md)")
    run.add_argument("--select", help="regular expression on scenario names")
    run.add_argument("--junit", help="write JUnit XML here")
    run.add_argument("--transcript", action="store_true", help="print every stanza sent and received")
    run.add_argument("--keep", action="store_true", help="keep each server's temp dir (logs)")
    run.add_argument("--cluster-nodes", type=int, metavar="N",
                     help="nodes of --server ejabberd-cluster (default 2; MDM_CLUSTER_NODES)")
    run.add_argument("--component-process", action="store_true",
                     help="run mdm-component as a process of its own, driven by signals and seen through "
                          "its admin API (docker-*: always, in the component image's container)")
    run.add_argument("paths", nargs="*", default=["conformance"])
    serve = sub.add_parser("serve", help="start a server with the component until Ctrl-C")
    serve.add_argument("--server", action="append", choices=SERVERS)
    serve.add_argument("--server-profile", action="append", metavar="FILE")
    serve.add_argument("--keep", action="store_true", help="keep the server's temp dir (e.g. a recording)")
    serve.add_argument("paths", nargs="*", help="scenarios whose accounts to create")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    args.server = args.server or ["prosody"]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # aioxmpp complains about iq replies the harness consumes itself (barriers, raw sends)
        logging.getLogger("aioxmpp").setLevel(logging.ERROR)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return asyncio.run(_run(args) if args.command == "run" else _serve(args))
        except (ScenarioError, ProfileError) as e:
            print(f"mdm-harness: {e}", file=sys.stderr)
            return 2
    return 130


if __name__ == "__main__":
    sys.exit(main())
