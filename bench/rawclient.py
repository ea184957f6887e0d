"""A minimal XMPP client for load: plaintext SASL PLAIN, bind, raw writes, and counting
</message> in what arrives. aioxmpp parses every stanza into objects and cannot keep up with a
server at full speed; this one does no XML parsing at all."""

from __future__ import annotations

import asyncio
import base64
import re


class RawClient:
    def __init__(self, user: str, password: str, resource: str, domain: str = "localhost") -> None:
        self.user, self.password, self.resource, self.domain = user, password, resource, domain
        self.messages = 0
        self._tail = b""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._counting: asyncio.Task[None] | None = None

    async def _until(self, pattern: bytes) -> bytes:
        data = b""
        while not re.search(pattern, data):
            chunk = await self._reader.read(65536)
            if not chunk:
                raise ConnectionError(f"closed while waiting for {pattern!r}: {data[-300:]!r}")
            data += chunk
        return data

    def _open(self) -> None:
        self._writer.write(f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                           f"xmlns:stream='http://etherx.jabber.org/streams' to='{self.domain}' "
                           "version='1.0'>".encode())

    async def connect(self, port: int, carbons: bool = True) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._open()
        await self._until(rb"</stream:features>")
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        self._writer.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
                           .encode())
        await self._until(rb"<success")
        self._open()
        await self._until(rb"</stream:features>")
        self._writer.write(f"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                           f"<resource>{self.resource}</resource></bind></iq>".encode())
        await self._until(rb"</iq>")
        if carbons:
            self._writer.write(b"<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
            await self._until(rb"id=.c.")
        self._writer.write(b"<presence/><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self._until(rb"id=.p.")

    def start_counting(self) -> None:
        self._counting = asyncio.get_running_loop().create_task(self._count())

    async def _count(self) -> None:
        while True:
            chunk = await self._reader.read(1 << 20)
            if not chunk:
                return
            data = self._tail + chunk
            self.messages += data.count(b"</message>")
            self._tail = data[-9:]  # a closing tag split across reads is counted once

    async def wait_messages(self, n: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.messages < n:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    def send(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    async def close(self) -> None:
        if self._counting:
            self._counting.cancel()
        if self._writer:
            self._writer.close()
