"""R5.2 / R5.3 across XEP-0198 resumption on a real Prosody and a real ejabberd (issue 10, item 8).

mod_smacks gives a resumed session the new connection's filter list, so the bridge's hold filter
was gone: a background phone that resumed got native stanzas (a headline) at once while the
component still held an older IM for it, and the flush then delivered the older IM after the
newer headline. The bridge now puts its filter back on resumption: both are held, and flushed in
their order when the phone comes back to the foreground.

The phone is a raw XMPP client (stream management with resumption, which the harness's clients
cannot resume); the rest of the cast are harness clients.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field

import pytest
from lxml import etree

from mdm_harness.clients import ClientPool
from mdm_harness.component_control import ComponentControl
from mdm_harness.environment import DEFAULT_ACCOUNTS, online
from mdm_harness.servers import start_server
from mdm_harness.waiting import poll_until

SM = "urn:xmpp:sm:3"
STREAM_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                 "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")


@dataclass
class RawClient:
    """Just enough of a client: SASL PLAIN, bind, XEP-0198 with resumption, and every stanza it
    receives (counted for the acks)."""

    host: str
    port: int
    stanzas: asyncio.Queue[etree._Element] = field(default_factory=asyncio.Queue)
    handled: int = 0  # stanzas received, for <a h=…/> and <resume h=…/>
    _nonzas: asyncio.Queue[etree._Element] = field(default_factory=asyncio.Queue)
    _writer: asyncio.StreamWriter | None = None
    _reader_task: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._reader_task = asyncio.create_task(self._read(reader))
        await self._restart()

    async def _restart(self) -> None:
        self.send(STREAM_HEADER)
        await self._nonza("features")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser, depth = etree.XMLPullParser(events=("start", "end")), 0
        while data := await reader.read(65536):
            parser.feed(data)
            for event, el in parser.read_events():
                depth += 1 if event == "start" else -1
                if event == "start" and depth == 1:
                    continue
                if event == "end" and depth == 1:
                    name = etree.QName(el)
                    if name.namespace == "jabber:client":
                        self.handled += 1
                        await self.stanzas.put(el)
                    elif name.namespace == SM and name.localname == "r":
                        self.send(f"<a xmlns='{SM}' h='{self.handled}'/>")
                    elif name.namespace != SM or name.localname != "a":
                        if name.localname == "enabled":
                            self.handled = 0  # XEP-0198 counts from <enabled/>
                        await self._nonzas.put(el)
                        if name.localname == "success":  # the stream restarts: a new parser
                            parser, depth = etree.XMLPullParser(events=("start", "end")), 0
                            break

    async def _nonza(self, localname: str) -> etree._Element:
        el = await asyncio.wait_for(self._nonzas.get(), 10)
        assert etree.QName(el).localname == localname, etree.tostring(el)
        return el

    def send(self, xml: str) -> None:
        assert self._writer is not None
        self._writer.write(xml.encode())

    async def _authenticate(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        await self._nonza("success")
        await self._restart()

    async def login(self, user: str, password: str, resource: str) -> str:
        """Log in, bind, enable resumable stream management; returns the stream's SM id."""
        await self._open()
        await self._authenticate(user, password)
        self.send(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        await self.expect(lambda s: s.get("id") == "bind")
        self.send(f"<enable xmlns='{SM}' resume='true'/>")
        return (await self._nonza("enabled")).get("id")

    async def resume(self, user: str, password: str, previd: str) -> None:
        await self._open()
        await self._authenticate(user, password)
        self.send(f"<resume xmlns='{SM}' previd='{previd}' h='{self.handled}'/>")
        await self._nonza("resumed")

    def abort(self) -> None:
        """The network goes away: no stream close, the server hibernates the session."""
        assert self._writer is not None
        self._writer.transport.abort()

    async def expect(self, match, timeout: float = 10) -> etree._Element:
        while True:
            el = await asyncio.wait_for(self.stanzas.get(), timeout)
            if match(el):
                return el

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        if self._reader_task is not None:
            self._reader_task.cancel()


STREAM_MANAGEMENT = {"prosody": "smacks", "ejabberd": "mod_stream_mgmt"}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["prosody", "ejabberd"])
async def test_R5_2_a_resumed_background_session_keeps_its_stanzas_held_in_order(tmp_path, kind):
    server = await start_server(kind, DEFAULT_ACCOUNTS, tmp_path / kind, extra_modules=(STREAM_MANAGEMENT[kind],))
    control = ComponentControl(server)
    pool = ClientPool(server, control.sees_inactive)
    phone = RawClient(server.host, server.c2s_port)
    try:
        await control.start()
        component = control.require()
        laptop = await online(pool, "alice@localhost", "alice-password", "laptop")
        bob = await online(pool, "bob@localhost", "bob-password", "desktop", carbons=False)
        sm_id = await phone.login("alice", "alice-password", "phone")
        jid = "alice@localhost/phone"
        phone.send("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq><presence/>")
        await phone.expect(lambda s: s.get("id") == "carbons")
        # the phone goes to the background (laptop active: silent mode), then loses its network
        phone.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        await poll_until(lambda: control.sees_inactive(jid), 10, "the component did not see <inactive/>")
        phone.abort()
        await poll_until(lambda: (s := component.core.sessions.get(jid)) is not None and s.phantom, 10,
                         "the session did not hibernate")
        await phone.resume("alice", "alice-password", sm_id)
        await poll_until(lambda: not component.core.sessions.get(jid).phantom, 10, "no resumption seen")

        # an IM for Alice: the laptop notifies, the phone's copy is held by the component
        await bob.send("<message to='alice@localhost' type='chat' id='im1'><body>first</body></message>")
        await poll_until(lambda: any(el.get("id") == "im1" for el in laptop.history), 10, "no IM at the laptop")
        # then a headline for the phone: native path, so held only by the bridge's hold filter
        await bob.send(f"<message to='{jid}' type='headline' id='h1'><body>news</body></message>")
        await pool.barrier()  # the server handled it (and, without the filter, sent it to the phone)

        phone.send("<active xmlns='urn:xmpp:csi:0'/>")
        ids = []
        while len(ids) < 2:
            el = await phone.expect(lambda s: etree.QName(s).localname == "message")
            assert el.find("{urn:xmpp:delay}delay") is not None, etree.tostring(el)  # both were held
            ids.append(el.get("id"))
        assert ids == ["im1", "h1"]
        assert component.stats.connects == 1
    finally:
        await phone.close()
        await pool.close()
        await control.stop()
        await server.stop()
