"""
poezio plugin: no beep and no desktop popup for an IM whose notification hint says the user is
reading on another device (R3.8; the hint: R3.4, docs/notify-hint.md). The message is shown,
logged and marks its tab as before.

Installation
------------

Copy this file into poezio's plugins directory (``~/.local/share/poezio/plugins/``, or the
``plugins_dir`` of your config) and load it with ``/load mdm_notify_hint``, or add it to
``plugins_autoload``. It works with or without ``simple_notify``, loaded before or after it.

How it works
------------

* The hint is read from the stanza as it came from the server, in synchronous slixmpp handlers
  (``message``; ``carbon_received``, whose wrapper carries a carbon's hint), which run before
  poezio's own asynchronous handlers display the message.
* The beep (``beep_on = private``) is poezio's own, after the message is displayed, and no event
  can stop it: while the last IM from a contact is quiet, the plugin sets poezio's per-contact
  ``disable_beep`` for that contact in memory (never saved), and puts the user's own value back
  when the next IM from them is not quiet.
* Desktop popups come from the ``simple_notify`` plugin's ``conversation_msg`` / ``private_msg``
  handlers; poezio's events cannot be stopped by another handler, so the plugin puts a guard in
  front of those two handlers that skips a quiet message (and takes it away when unloaded).
* No hint (MDM off, the component down): poezio's own rules, unchanged (R9.10).

CSI (XEP-0352) is not this plugin's business: poezio's ``csi`` plugin sends it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from poezio.config import config
from poezio.plugin import BasePlugin

NOTIFY = "{urn:x-open-mdm:notify:0}notify"
NOTIFIER = "simple_notify"
GUARDED_EVENTS = ("conversation_msg", "private_msg")
REMEMBERED = 512  # quiet IMs remembered until a notifier asks about them


class Guard:
    """A notifier's handler behind a check; equal to the handler itself, so poezio's
    ``del_event_handler`` still finds it when the notifier is unloaded."""

    def __init__(self, handler: Callable[..., Any], quiet: Callable[[Any], bool]) -> None:
        self.handler = handler
        self.quiet = quiet

    def __call__(self, message: Any, tab: Any) -> Any:
        if self.quiet(message):
            return None
        return self.handler(message, tab)

    def __eq__(self, other: object) -> bool:
        return other is self or other == self.handler

    def __hash__(self) -> int:
        return hash(self.handler)


def key(message: Any) -> tuple[str, str]:
    return (str(message["from"]), message["id"] or message["body"])


class Plugin(BasePlugin):
    def init(self) -> None:
        self._quiet: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._beep_held: dict[str, str | None] = {}  # contact -> the user's own disable_beep
        self.api.add_slix_event_handler("message", self._on_message)
        self.api.add_slix_event_handler("carbon_received", self._on_carbon)

    def cleanup(self) -> None:
        for contact in list(self._beep_held):
            self._release_beep(contact)
        for callbacks in self._event_lists():
            callbacks[:] = [c.handler if isinstance(c, Guard) else c for c in callbacks]

    # --- reading the hint (before poezio displays the message) ---

    def _on_message(self, message: Any) -> None:
        self._note(message, message)

    def _on_carbon(self, message: Any) -> None:
        self._note(message, message["carbon_received"])

    def _note(self, outer: Any, im: Any) -> None:
        if not im["body"] or im["type"] == "groupchat":
            return
        # the last one: the server appends its own; one a contact put in the message comes earlier
        hints = outer.xml.findall(NOTIFY)
        quiet = bool(hints) and hints[-1].get("value") == "false"
        if quiet:
            self._quiet[key(im)] = True
            while len(self._quiet) > REMEMBERED:
                self._quiet.popitem(last=False)
            self._hold_beep(im["from"].bare)
        else:
            self._release_beep(im["from"].bare)
        self._guard_notifier()

    def _is_quiet(self, message: Any) -> bool:
        return self._quiet.pop(key(message), False)

    # --- the beep: poezio's per-contact disable_beep, in memory only ---

    def _hold_beep(self, contact: str) -> None:
        if contact in self._beep_held:
            return
        parser = config.configparser
        if not parser.has_section(contact):
            parser.add_section(contact)
            self._beep_held[contact] = None
        else:
            self._beep_held[contact] = parser.get(contact, "disable_beep", fallback=None)
        parser.set(contact, "disable_beep", "true")

    def _release_beep(self, contact: str) -> None:
        if contact not in self._beep_held:
            return
        own = self._beep_held.pop(contact)
        parser = config.configparser
        if own is not None:
            parser.set(contact, "disable_beep", own)
            return
        parser.remove_option(contact, "disable_beep")
        if not parser.options(contact):
            parser.remove_section(contact)

    # --- the popup: simple_notify's handlers behind a guard ---

    def _event_lists(self) -> list[list[Callable[..., Any]]]:
        return [callbacks for name in GUARDED_EVENTS
                for callbacks in self.core.events.events.get(name, {}).values()]

    def _guard_notifier(self) -> None:
        notifier = self.core.plugin_manager.plugins.get(NOTIFIER)
        if notifier is None:
            return
        for callbacks in self._event_lists():
            for i, callback in enumerate(callbacks):
                if getattr(callback, "__self__", None) is notifier:
                    callbacks[i] = Guard(callback, self._is_quiet)
