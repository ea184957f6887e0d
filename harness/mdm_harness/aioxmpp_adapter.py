"""Every workaround the harness needs on top of aioxmpp 0.13.3, in one place.

aioxmpp parses stanzas into typed objects and drops payloads it has no class for, it has no CSI
support, and it sends no raw XML. The harness needs the bytes as the server sent them and needs
to send any XML a scenario holds, so this module reaches into aioxmpp's (private) XML stream:

* capture: the stream's SAX parser is teed, after login, into an lxml tree per top-level element;
* raw send: complete XML fragments are written to the stream's transport between stanzas;
* plaintext: a security layer without TLS, and ``override_peer`` to the loopback port.

Stream management is not offered by our test servers: raw sends would confuse its counters.
"""

from __future__ import annotations

import fcntl
import logging
import struct
import termios
from collections.abc import Callable
from typing import Any

import aioxmpp
import aioxmpp.connector
from lxml import etree
from lxml.sax import ElementTreeContentHandler

log = logging.getLogger(__name__)
JABBER_CLIENT = "jabber:client"


class _Tee:
    """A SAX content handler that passes every event on to aioxmpp's own processor and also
    builds an lxml element for each top-level element of the stream (depth 2)."""

    def __init__(self, inner: Any, on_element: Callable[[etree._Element], None]) -> None:
        self._inner = inner
        self._on_element = on_element
        self._depth = 1  # installed inside the open <stream:stream>
        self._builder: ElementTreeContentHandler | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def startPrefixMapping(self, prefix, uri):  # noqa: N802 (SAX names)
        self._inner.startPrefixMapping(prefix, uri)
        if self._builder is not None:
            self._builder.startPrefixMapping(prefix, uri)

    def endPrefixMapping(self, prefix):  # noqa: N802
        self._inner.endPrefixMapping(prefix)
        if self._builder is not None:
            self._builder.endPrefixMapping(prefix)

    def startElementNS(self, name, qname, attributes):  # noqa: N802
        self._depth += 1
        if self._depth == 2:
            self._builder = ElementTreeContentHandler()
            self._builder.startPrefixMapping(None, JABBER_CLIENT)
        if self._builder is not None:
            self._builder.startElementNS(name, qname, attributes)
        self._inner.startElementNS(name, qname, attributes)

    def characters(self, content):
        if self._builder is not None:
            self._builder.characters(content)
        self._inner.characters(content)

    def endElementNS(self, name, qname):  # noqa: N802
        builder = self._builder
        if builder is not None:
            builder.endElementNS(name, qname)
        self._depth -= 1
        if self._depth == 1 and builder is not None:
            self._builder = None
            self._on_element(builder.etree.getroot())
        self._inner.endElementNS(name, qname)


def make_client(jid: str, password: str, host: str, port: int) -> aioxmpp.Client:
    """Build inside the running event loop (aioxmpp binds to it at construction)."""
    security = aioxmpp.make_security_layer(password, no_verify=True)._replace(tls_required=False)
    return aioxmpp.Client(aioxmpp.JID.fromstr(jid), security,
                          override_peer=[(host, port, aioxmpp.connector.STARTTLSConnector())],
                          logger=logging.getLogger(f"aioxmpp.{jid}"))


def _xmlstream(client: aioxmpp.Client) -> Any:
    xs = client.stream._xmlstream
    if xs is None:
        raise RuntimeError("client is not connected")
    return xs


def install_capture(client: aioxmpp.Client, on_element: Callable[[etree._Element], None]) -> None:
    xs = _xmlstream(client)
    xs._parser.setContentHandler(_Tee(xs._processor, on_element))


def send_raw(client: aioxmpp.Client, data: bytes) -> None:
    """Write complete XML fragments (stanzas or nonzas such as CSI) onto the stream."""
    _xmlstream(client)._transport.write(data)


def abort(client: aioxmpp.Client) -> None:
    """Drop the TCP connection without closing the stream, as a phone losing its network does
    (with XEP-0198 the server then keeps the session for resumption)."""
    _xmlstream(client)._transport.abort()


def unread_bytes(client: aioxmpp.Client) -> int:
    """Bytes the kernel holds for this connection that aioxmpp has not read yet (FIONREAD)."""
    sock = _xmlstream(client)._transport.get_extra_info("socket")
    if sock is None:
        return 0
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def count_reads(client: aioxmpp.Client, on_read: Callable[[int], None]) -> None:
    """Call ``on_read(len)`` for every chunk the socket delivers: each is a radio wake-up for a
    phone (the benchmark of R5 counts them)."""
    xs = _xmlstream(client)
    inner = xs.data_received

    def data_received(data: bytes) -> None:
        on_read(len(data))
        inner(data)

    xs.data_received = data_received
