"""XML namespaces we speak. Ours live under ``urn:x-open-mdm:``: the ``urn:xmpp:`` space belongs to
the XSF, so we do not invent names there (docs/bridge-protocol.md documents both of ours)."""

CLIENT = "jabber:client"
COMPONENT = "jabber:component:accept"
STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
HINTS = "urn:xmpp:hints"
MUC_USER = "http://jabber.org/protocol/muc#user"
CHAT_MARKERS = "urn:xmpp:chat-markers:0"
DELAY = "urn:xmpp:delay"

# The bridge protocol between a server module and the component (docs/bridge-protocol.md).
BRIDGE = "urn:x-open-mdm:bridge:0"
# The notification hint on delivered IMs (R3.4): <notify xmlns=NOTIFY value='true|false'/>.
NOTIFY = "urn:x-open-mdm:notify:0"


def q(ns: str, name: str) -> str:
    """Clark notation, as lxml spells qualified names."""
    return f"{{{ns}}}{name}"
