"""Device types for the session report (R8.3), from what the client tells about itself.

Sources, best first: the XEP-0115 caps node of its presence (which software it is: Conversations
runs on Android, Monal and Siskin on iOS …), then its resource name, which many clients fill with
the device ("iPhone 15", "android-tablet", "laptop"). The vendor's four types are kept: Desktop,
iPhone, iPad, Android phone; an Android tablet is reported as Desktop, as the seed says (R8.3).
"""

from __future__ import annotations

DESKTOP, IPHONE, IPAD, ANDROID_PHONE = "Desktop", "iPhone", "iPad", "Android phone"
TYPES = (DESKTOP, IPHONE, IPAD, ANDROID_PHONE)

# caps nodes (or their host part) of well-known mobile clients -> platform
_IOS_CLIENTS = ("monal", "siskin", "chatsecure", "snikket.org/ios")
_ANDROID_CLIENTS = ("conversations", "blabber", "cheogram", "quicksy", "monocles", "snikket.org/android",
                    "yaxim", "xabber")


def device_type(resource: str | None, client: str | None = None) -> str:
    text = f"{client or ''} {resource or ''}".lower()
    tablet = "tablet" in text or "tab " in text
    if "ipad" in text:
        return IPAD
    if "iphone" in text or "ios" in text.split() or any(c in text for c in _IOS_CLIENTS):
        return IPAD if tablet else IPHONE
    if "android" in text or any(c in text for c in _ANDROID_CLIENTS):
        return DESKTOP if tablet else ANDROID_PHONE  # R8.3: an Android tablet counts as Desktop
    if any(word in text for word in ("phone", "mobile", "handheld")):
        return ANDROID_PHONE if "iphone" not in text else IPHONE
    return DESKTOP
