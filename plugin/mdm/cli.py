"""mdm-component: the open-mdm component (Multi-Device Messaging for Prosody and ejabberd).

  mdm-component --config FILE            run until SIGINT/SIGTERM; SIGHUP reloads [mdm], [buffer] limits, metrics.period
  mdm-component --config FILE --check    validate the config (add --live: ask the server and the bridge)
  mdm-component setup prosody|ejabberd   check the server, print (or --write) what to add
  mdm-component doctor --config FILE     is the server up, does the bridge answer
  mdm-component files                    where the bridges, the example config and the unit are
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys

from . import __version__, preflight
from . import config as config_mod
from .component import Component


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["setup"], ["doctor"], ["files"]):
        return _subcommand(argv)
    parser = argparse.ArgumentParser(prog="mdm-component", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mdm-component {__version__}")
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--live", action="store_true",
                        help="with --check: also connect to the server and check that the bridge answers (doctor)")
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"mdm-component: config error: {e}", file=sys.stderr)
        return 2
    # Issue 10.5: what would fail at start is one line per problem naming its key, exit code 2.
    # --check leaves the ports out: a running instance of this very config holds them.
    problems = preflight.check_paths(cfg)
    problems += asyncio.run(preflight.check_services(cfg, ports=not args.check))
    if problems:
        for p in problems:
            print(f"mdm-component: config error: {p}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: OK")
        if args.live:
            from . import doctor
            return doctor.run(cfg)
        return 0
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(cfg, args.config))
    except OSError as e:  # e.g. a port taken between the check and the bind
        print(f"mdm-component: start failed: {e}", file=sys.stderr)
        return 2
    return 0


async def _serve(cfg: config_mod.Config, path: str) -> None:
    component = Component(cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    running = cfg

    def reload() -> None:  # R1.2: live reload of [mdm], no session dropped
        nonlocal running
        log = logging.getLogger("mdm")
        try:
            new = config_mod.load(path)
        except config_mod.ConfigError as e:
            log.error("reload refused, keeping the running config: %s", e)
            return
        pending = restart_keys(running, new)
        if pending:
            log.warning("SIGHUP: %s changed in %s: %s only after a restart (systemctl restart mdm-component); "
                        "the running values stay until then", ", ".join(pending), path,
                        "it takes effect" if len(pending) == 1 else "they take effect")
        if new.core != running.core:
            component.reconfigure(new.core)
        elif not pending:
            log.info("SIGHUP: %s unchanged", path)
        running = dataclasses.replace(running, core=new.core)

    loop.add_signal_handler(signal.SIGHUP, reload)
    task = asyncio.create_task(component.run())
    await stop.wait()
    await component.stop()
    await task


def restart_keys(old: config_mod.Config, new: config_mod.Config) -> list[str]:
    """The config keys that differ between ``old`` and ``new`` and only a restart applies."""
    changed = []
    for section, keys in config_mod._SCHEMA.items():
        for key, (attr, _typ, _what) in keys.items():
            name = f"{section}.{key}"
            if name not in config_mod.LIVE_KEYS and config_mod.value_at(old, attr) != config_mod.value_at(new, attr):
                changed.append(name)
    return changed


def _subcommand(argv: list[str]) -> int:
    name, rest = argv[0], argv[1:]
    if name == "setup":
        from . import setup_cmd
        parser = argparse.ArgumentParser(
            prog="mdm-component setup",
            description="Check the server's version and config, then print (or write, with --write) exactly "
                        "what to add: the module files, the server's config lines, the component's config and "
                        "its systemd unit.")
        setup_cmd.add_arguments(parser)
        return setup_cmd.run(parser.parse_args(rest))
    if name == "files":
        from .setup_cmd import bridge_dir, package_file
        print(f"prosody module (prosody-modules layout): {bridge_dir('prosody')}")
        print(f"ejabberd module (ejabberd-contrib layout): {bridge_dir('ejabberd')}")
        print(f"example config: {package_file('data', 'mdm-component.example.toml')}")
        print(f"systemd unit: {package_file('data', 'mdm-component.service')}")
        return 0
    from . import doctor
    parser = argparse.ArgumentParser(prog="mdm-component doctor",
                                     description="Connect to the server and say whether the bridge answers.")
    parser.add_argument("--config", default="/etc/mdm-component/mdm-component.toml",
                        help="the component's config (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    args = parser.parse_args(rest)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"mdm-component: config error: {e}", file=sys.stderr)
        return 2
    return doctor.run(cfg, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
