"""Gajim (Debian's package) as alice's laptop (R3.8): its profile written before it starts
(Gajim 1.7 keeps settings in ``~/.config/gajim/settings.sqlite``: one JSON document per
section, one per account), the plugin copied into ``~/.local/share/gajim/plugins/`` the way a
user installs it, and what it stored read back from its archive (``logs.db``)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from mdm_harness.waiting import poll_until

from .children import as_user, program
from .desktop import Desktop
from .scenario import LaptopAccount

PLUGIN = Path(__file__).resolve().parents[2] / "clients" / "gajim" / "mdm_notify_hint"
SETTINGS_VERSION = 5  # settings.sqlite's user_version in Gajim 1.7

APP_SETTINGS = {
    "use_keyring": False,  # the password from the profile, no secret service on the test bus
    "check_for_update": False, "plugins_update_check": False, "plugins_repository_enabled": False,
    "show_main_window_on_startup": "always",
    "sounds_on": False,  # no sound device here; the popup is what is counted
}


def write_profile(home: Path, account: LaptopAccount, *, plugin: bool) -> None:
    """A profile that logs in at start, plaintext on loopback (the harness's Prosody), with the
    plugin installed and enabled or not there at all (stock Gajim)."""
    config = home / ".config" / "gajim"
    config.mkdir(parents=True, exist_ok=True)
    settings = {
        "app": APP_SETTINGS, "soundevents": {}, "status_presets": {}, "proxies": {},
        "plugins": {"mdm_notify_hint": {"active": True}} if plugin else {},
        # the main window needs one workspace (Gajim creates this one on a first start)
        "workspaces": {"0516a771-d65a-45ca-a7f0-745dfea45a1d": {}},
    }
    account_settings = {"account": {
        "name": account.user, "hostname": account.domain, "password": account.password,
        "resource": account.resource, "active": True, "autoconnect": True, "savepass": True,
        "use_custom_host": True, "custom_host": account.host, "custom_port": account.port,
        "custom_type": "PLAIN", "use_plain_connection": True, "confirm_unencrypted_connection": False,
    }, "contact": {}, "group_chat": {}}
    with sqlite3.connect(config / "settings.sqlite") as db:
        db.execute("CREATE TABLE settings (name TEXT UNIQUE, settings TEXT)")
        db.execute("CREATE TABLE account_settings (account TEXT UNIQUE, settings TEXT)")
        db.executemany("INSERT INTO settings VALUES (?, ?)", [(k, json.dumps(v)) for k, v in settings.items()])
        db.execute("INSERT INTO account_settings VALUES (?, ?)", (account.user, json.dumps(account_settings)))
        db.execute(f"PRAGMA user_version={SETTINGS_VERSION}")
    if plugin:
        plugins = home / ".local" / "share" / "gajim" / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        shutil.copytree(PLUGIN, plugins / PLUGIN.name, ignore=shutil.ignore_patterns("__pycache__"))


class Gajim:
    def __init__(self, desktop: Desktop, account: LaptopAccount, *, plugin: bool) -> None:
        self.desktop = desktop
        self.account = account
        self.home = Path(desktop.env["HOME"])
        write_profile(self.home, account, plugin=plugin)

    async def start(self) -> None:
        argv = as_user([program("gajim"), "--verbose"], self.home)
        await self.desktop.children.start("gajim", *argv, env=self.desktop.env)

    def log(self) -> str:
        return self.desktop.children.log("gajim", 60)

    def received(self) -> list[str]:
        """The bodies of the IMs Gajim stored for its chat view (its archive), in order."""
        path = self.home / ".local" / "share" / "gajim" / "logs.db"
        if not path.exists():
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            try:
                rows = db.execute("SELECT message FROM logs WHERE message IS NOT NULL "
                                  "ORDER BY log_line_id").fetchall()
            except sqlite3.OperationalError:  # not created yet
                return []
        return [r[0] for r in rows]

    async def wait_received(self, bodies: list[str], timeout: float = 20.0) -> None:
        """Until Gajim has stored every one of ``bodies`` (the chat view shows what is stored)."""
        await poll_until(lambda: all(b in self.received() for b in bodies), timeout,
                         f"Gajim did not store {bodies}; it has {self.received()}\n{self.log()}", interval=0.1)
