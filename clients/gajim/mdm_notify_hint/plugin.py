"""Gajim plugin: no popup and no sound for an IM whose notification hint says the user is
reading on another device (R3.8; the hint: R3.4, docs/notify-hint.md).

How it works, in Gajim 1.7 (Debian 12) and 2.x (Debian 13) alike:

* ``stanza-received`` (raised from nbxmpp's ``before-dispatch``, with the stanza as it came off
  the wire): note the hint of each incoming ``<message/>``. Not a ``modules`` StanzaHandler:
  nbxmpp unwraps a XEP-0280 carbon before any handler runs, and the component puts a carbon's
  hint on the wrapper; not ``message-received``: in 2.x that event no longer carries the stanza.
* Gajim then stores the message (its archive), raises ``message-received`` (chat view, unread
  count) and from there, in the same call, the ``notification`` event. At ``ged.PREGUI`` (ahead
  of the notification backend at ``GUI2``, as gajim-plugins' ``triggers`` does) a handler that
  returns True stops that event: no D-Bus popup, no sound. Nothing else is stopped, so the
  message is shown and counted as unread as before.
* No hint (MDM off, component down, a third-party server): Gajim's own rules, unchanged.

CSI (XEP-0352) on window focus is deliberately not sent: on a desktop an unfocused window does
not mean the user is away (they read popups while working in another program); a background
client is never the active one (R3.5), so the laptop would stay silent and the phone would
buzz instead, and the component would hold the laptop's IMs (R5.1) until the window is focused.
"""

from __future__ import annotations

import logging
from typing import Any

from gajim.common import app, ged
from gajim.plugins import GajimPlugin

from .hint import Hint, read_hint, same_contact

log = logging.getLogger("gajim.p.mdm_notify_hint")


class MdmNotifyHintPlugin(GajimPlugin):
    def init(self) -> None:
        self.description = "Notify only on the device the server names as active (open-mdm)"
        self.config_dialog = None
        # account -> the hint of the message Gajim is processing now (None: no hint)
        self._current: dict[str, Hint | None] = {}
        self._urgency: dict[str, bool] = {}
        self.events_handlers = {
            "stanza-received": (ged.PRECORE, self._on_stanza_received),
            "notification": (ged.PREGUI, self._on_notification),
        }

    def _on_stanza_received(self, event: Any) -> None:
        stanza = event.stanza
        if not hasattr(stanza, "getName") or stanza.getName() != "message":
            return
        # every message replaces the last one's hint: a notification is raised while its own
        # message is processed, so a hint never outlives the message that carried it
        self._current[event.account] = read_hint(stanza)
        window = getattr(app, "window", None)
        if window is not None and hasattr(window, "get_urgency_hint"):  # GTK 3 (Gajim 1.7)
            self._urgency[event.account] = bool(window.get_urgency_hint())

    def _on_notification(self, event: Any) -> bool:
        if event.type != "incoming-message" or event.jid is None:
            return False
        hint = self._current.pop(event.account, None)
        if hint is None or hint.notify or not same_contact(hint, str(event.jid)):
            return False
        log.info("notification for %s left out: the server says the user is active elsewhere", event.jid)
        # Gajim 1.7 flags the window (taskbar) just before raising the event: put it back
        window = getattr(app, "window", None)
        if event.account in self._urgency and window is not None and hasattr(window, "set_urgency_hint"):
            window.set_urgency_hint(self._urgency[event.account])
        return True  # stops the notification event: no popup, no sound
