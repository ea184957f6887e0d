"""profanity (Debian's package) as alice's laptop (R3.8 table): in tmux, with the desktop's
private D-Bus bus so its libnotify popups reach the notification double. It has no plugin hook
that can veto a notification (shared/notes/clients.md), so it is measured stock only."""

from __future__ import annotations

from pathlib import Path

from .children import program
from .desktop import Desktop
from .scenario import LaptopAccount
from .terminal import Terminal


class Profanity:
    def __init__(self, desktop: Desktop, account: LaptopAccount) -> None:
        self.home = Path(desktop.env["HOME"])
        self.account = account
        self.terminal = Terminal(desktop.workdir, desktop.env, desktop.children)
        data = self.home / ".local" / "share" / "profanity"
        data.mkdir(parents=True, exist_ok=True)
        (data / "accounts").write_text(
            f"[{account.jid}]\nenabled=true\njid={account.jid}\nresource={account.resource}\n"
            f"server={account.host}\nport={account.port}\npassword={account.password}\n"
            "tls.policy=disable\n")  # plaintext on loopback, as the harness's other clients
        config = self.home / ".config" / "profanity"
        config.mkdir(parents=True, exist_ok=True)
        # a popup per chat message, the chat window current or not (profanity's /notify chat on)
        (config / "profrc").write_text("[notifications]\nmessage=true\nmessage.current=true\nmessage.text=true\n")

    async def start(self) -> None:
        await self.terminal.start("laptop", [program("profanity"), "-a", self.account.jid], self.home)

    def log(self) -> str:
        return self.terminal.text()
