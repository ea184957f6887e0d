"""``mdm-component --config FILE``: run the component until SIGINT/SIGTERM; SIGHUP reloads [mdm]."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import config as config_mod
from . import preflight
from .component import Component


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mdm-component", description=__doc__)
    parser.add_argument("--config", required=True, help="TOML configuration file")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
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

    def reload() -> None:  # R1.2: live reload of [mdm], no session dropped
        try:
            component.reconfigure(config_mod.load(path).core)
        except config_mod.ConfigError as e:
            logging.getLogger("mdm").error("reload refused, keeping the running config: %s", e)

    loop.add_signal_handler(signal.SIGHUP, reload)
    task = asyncio.create_task(component.run())
    await stop.wait()
    await component.stop()
    await task


if __name__ == "__main__":
    sys.exit(main())
