"""poezio (Debian's package) as alice's laptop in tmux (R3.8): its config written before it
starts, the plugin copied into its plugins directory the way a user installs it, and what a user
would notice counted: the terminal bell (every byte the pane writes, through tmux's
``pipe-pane``) and simple_notify's desktop popups (its command pointed at a script that records
each call); what it shows and logs read back from its conversation log."""

from __future__ import annotations

import shutil
from pathlib import Path

from .children import Children, program
from .scenario import LaptopAccount
from .terminal import Terminal
from .waits import until

PLUGIN = Path(__file__).resolve().parents[2] / "clients" / "poezio" / "mdm_notify_hint.py"
TIMEOUT = 20.0

# simple_notify's shape (a conversation_msg handler that asks for a popup) without its 0.14 bug
# (AttributeError on every 1:1 IM): put in the user's plugin folder, which poezio searches before
# its own, so the plugin's guard on "simple_notify" is exercised by poezio's real event system
NOTIFIER_STAND_IN = """from poezio.plugin import BasePlugin


class Plugin(BasePlugin):
    def init(self):
        self.api.add_event_handler('conversation_msg', self.on_conversation_msg)

    def on_conversation_msg(self, message, tab):
        if message['from'].bare != self.core.xmpp.boundjid.bare and message['body']:
            with open({out!r}, 'a') as f:
                f.write(message['body'] + '\\n')
"""

NOTIFY_SCRIPT = """#!/bin/sh
# simple_notify's command: one line per desktop popup poezio asks for
printf '%s\\n' "$2" >> {out}
"""


class Poezio:
    def __init__(self, workdir: Path, account: LaptopAccount, *, plugin: bool, stand_in: bool = False) -> None:
        """``stand_in``: simple_notify replaced by NOTIFIER_STAND_IN (same name, working popups)."""
        self.workdir = workdir
        self.children = Children(workdir)
        self.home = workdir / "home"
        self.popups_file = self.home / "popups.out"  # written by the client's user
        self.logs = self.home / ".local" / "share" / "poezio" / "logs"
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8",
               "XDG_CONFIG_HOME": str(self.home / ".config"), "XDG_DATA_HOME": str(self.home / ".local" / "share"),
               "XDG_CACHE_HOME": str(self.home / ".cache")}
        self.terminal = Terminal(workdir, env, self.children)
        self._write_config(account, plugin, stand_in)

    def _write_config(self, account: LaptopAccount, plugin: bool, stand_in: bool) -> None:
        config = self.home / ".config" / "poezio"
        (config / "plugins").mkdir(parents=True, exist_ok=True)
        plugins = ["simple_notify"] + (["mdm_notify_hint"] if plugin else [])
        (config / "poezio.cfg").write_text(
            "[Poezio]\n"
            f"jid = {account.jid}/{account.resource}\npassword = {account.password}\n"
            f"custom_host = {account.host}\ncustom_port = {account.port}\n"
            "force_encryption = false\n"  # plaintext on loopback, as the harness's other clients
            f"plugins_autoload = {' '.join(plugins)}\n"
            "mam_sync = false\n"  # no history fetch on a new tab: what arrives is what is counted
            "use_remote_bookmarks = false\n")
        script = self.home / "notify.sh"
        script.write_text(NOTIFY_SCRIPT.format(out=self.popups_file))
        script.chmod(0o755)
        (config / "plugins" / "simple_notify.cfg").write_text(
            f"[simple_notify]\ncommand = {script} %(from)s %(body)s\n")
        plugins_dir = self.home / ".local" / "share" / "poezio" / "plugins"
        plugins_dir.mkdir(parents=True, exist_ok=True)
        if plugin:
            shutil.copy(PLUGIN, plugins_dir / PLUGIN.name)
        if stand_in:
            (plugins_dir / "simple_notify.py").write_text(NOTIFIER_STAND_IN.format(out=str(self.popups_file)))

    async def start(self) -> None:
        await self.terminal.start("laptop", [program("poezio")], self.home)

    async def stop(self) -> None:
        await self.children.stop()

    def remove(self) -> None:
        """After a passing test (a failing one keeps the pane's output and poezio's logs)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        return self.terminal.text()

    def beeps(self) -> int:
        return self.terminal.beeps()

    def popups(self) -> list[str]:
        return self.popups_file.read_text().splitlines() if self.popups_file.exists() else []

    def received(self) -> str:
        """poezio's conversation log with Bob: what its tab showed."""
        path = self.logs / "bob@localhost"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_received(self, bodies: list[str]) -> None:
        await until(lambda: all(b in self.received() for b in bodies), TIMEOUT,
                    lambda: f"poezio did not show {bodies}:\n{self.log()}")

    async def wait_popups(self, count: int) -> None:
        await until(lambda: len(self.popups()) >= count, TIMEOUT,
                    lambda: f"poezio asked for popups {self.popups()}, not {count}:\n{self.log()}")

    async def wait_beeps(self, count: int) -> None:
        await until(lambda: self.beeps() >= count, TIMEOUT,
                    lambda: f"poezio beeped {self.beeps()} times, not {count}:\n{self.log()}")
