"""A notification-daemon double for the real-client tests (R3.8): owns
org.freedesktop.Notifications on the session bus it is given and prints one JSON line per
``Notify`` call on stdout (what a desktop would show as a popup), so a test waits on the lines.

Run by Debian's python3 (python3-dbus, python3-gi), not the project's virtualenv: the desktop
clients and this double talk D-Bus the way a desktop does."""

import json
import sys
from itertools import count

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"


class Notifications(dbus.service.Object):
    def __init__(self, bus: dbus.Bus) -> None:
        super().__init__(bus, PATH)
        self._ids = count(1)

    @dbus.service.method(NAME, in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app, replaces_id, icon, summary, body, actions, hints, timeout):  # noqa: N802
        nid = int(replaces_id) or next(self._ids)
        print(json.dumps({"app": str(app), "id": nid, "replaces": int(replaces_id),
                          "summary": str(summary), "body": str(body)}), flush=True)
        return dbus.UInt32(nid)

    @dbus.service.method(NAME, in_signature="", out_signature="as")
    def GetCapabilities(self):  # noqa: N802
        return ["actions", "body"]

    @dbus.service.method(NAME, in_signature="u", out_signature="")
    def CloseNotification(self, nid):  # noqa: N802
        self.NotificationClosed(nid, 3)

    @dbus.service.method(NAME, in_signature="", out_signature="ssss")
    def GetServerInformation(self):  # noqa: N802
        return ("open-mdm-notification-double", "open-mdm", "0.1", "1.2")

    @dbus.service.signal(NAME, signature="uu")
    def NotificationClosed(self, nid, reason):  # noqa: N802
        pass


def main() -> None:
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)
    _service = Notifications(bus)
    print(json.dumps({"ready": name.get_name()}), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    sys.exit(main())
