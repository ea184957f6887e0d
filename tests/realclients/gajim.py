"""Gajim (Debian's package) as alice's laptop (R3.8): its profile written before it starts
(Gajim 1.7 keeps settings in ``~/.config/gajim/settings.sqlite``: one JSON document per
section, one per account), the plugin copied into ``~/.local/share/gajim/plugins/`` the way a
user installs it, and what it stored read back from its archive (``logs.db``)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from .children import as_user, program
from .desktop import Desktop
from .scenario import LaptopAccount
from .trixie import in_root, release
from .waits import until

PLUGIN = Path(__file__).resolve().parents[2] / "clients" / "gajim" / "mdm_notify_hint"
# settings.sqlite's user_version: Gajim 1.7 (Debian 12) and 2.1 (Debian 13)
SETTINGS_VERSION = {1: 5, 2: 7}

APP_SETTINGS = {
    "use_keyring": False,  # the password from the profile, no secret service on the test bus
    "check_for_update": False, "plugins_update_check": False, "plugins_repository_enabled": False,
    "show_main_window_on_startup": "always",
    "sounds_on": False,  # no sound device here; the popup is what is counted
}


def write_profile(home: Path, account: LaptopAccount, *, plugin: bool, major: int = 1) -> None:
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
    if major >= 2:
        settings["window_sizes"] = {}
    account_settings = {"account": {
        "name": account.user, "hostname": account.domain, "password": account.password,
        "resource": account.resource, "active": True, "autoconnect": True, "savepass": True,
        "use_custom_host": True, "custom_host": account.host, "custom_port": account.port,
        "custom_type": "PLAIN", "use_plain_connection": True, "confirm_unencrypted_connection": False,
    }, "contact": {}, "group_chat": {}}
    if major >= 2:  # 2.x names the account by its address
        account_settings["account"]["address"] = account.jid
    with sqlite3.connect(config / "settings.sqlite") as db:
        db.execute("CREATE TABLE settings (name TEXT UNIQUE, settings TEXT)")
        db.execute("CREATE TABLE account_settings (account TEXT UNIQUE, settings TEXT)")
        db.executemany("INSERT INTO settings VALUES (?, ?)", [(k, json.dumps(v)) for k, v in settings.items()])
        db.execute("INSERT INTO account_settings VALUES (?, ?)", (account.user, json.dumps(account_settings)))
        db.execute(f"PRAGMA user_version={SETTINGS_VERSION[major]}")
    if plugin:
        plugins = home / ".local" / "share" / "gajim" / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        shutil.copytree(PLUGIN, plugins / PLUGIN.name, ignore=shutil.ignore_patterns("__pycache__"))


class Gajim:
    """Debian 12's Gajim 1.7 from the host, or with ``root`` (trixie.py) Debian 13's Gajim 2.x."""

    def __init__(self, desktop: Desktop, account: LaptopAccount, *, plugin: bool, root: Path | None = None) -> None:
        self.desktop = desktop
        self.account = account
        self.root = root
        self.home = Path(desktop.env["HOME"])
        write_profile(self.home, account, plugin=plugin, major=2 if root is not None else 1)

    async def start(self) -> None:
        argv = as_user([program("gajim"), "--verbose"], self.home)
        env = dict(self.desktop.env)
        if self.root is not None:
            argv = in_root(self.root, self.desktop.workdir, argv)
            env["GSK_RENDERER"] = "cairo"  # GTK 4 without GL on Xvfb
            env["GTK_A11Y"] = "none"
        await self.desktop.children.start("gajim", *argv, env=env)

    def release(self) -> None:
        """After it stopped: the mount point made in the root (Gajim 2.x) goes."""
        if self.root is not None:
            release(self.root, self.desktop.workdir)

    def log(self) -> str:
        return self.desktop.children.log("gajim", 60)

    def caught_up(self) -> bool:
        """Gajim's archive query at login (XEP-0313) is done. Until then a live IM races its
        archived copy: Gajim 2.1 then stores the IM twice (seen here), whatever the plugin."""
        path = self.desktop.workdir / "gajim.log"
        return path.exists() and f"Request finished: {self.account.jid}," in path.read_text(errors="replace")

    def received(self) -> list[str]:
        """The bodies of the IMs Gajim stored for its chat view (its archive), in order."""
        path = self.home / ".local" / "share" / "gajim" / "logs.db"
        if not path.exists():
            return []
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            # Gajim 1.7's table is logs(message), 2.x's message(text)
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "logs" in tables:
                rows = db.execute("SELECT message FROM logs WHERE message IS NOT NULL ORDER BY log_line_id").fetchall()
            elif "message" in tables:
                rows = db.execute("SELECT text FROM message WHERE text IS NOT NULL ORDER BY pk").fetchall()
            else:  # not created yet
                return []
        return [r[0] for r in rows]

    async def wait_received(self, bodies: list[str], timeout: float = 20.0) -> None:
        """Until Gajim has stored every one of ``bodies`` (the chat view shows what is stored)."""
        await until(lambda: all(b in self.received() for b in bodies), timeout,
                    lambda: f"Gajim did not store {bodies}; it has {self.received()}\n{self.log()}")
