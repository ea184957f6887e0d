"""The XEP-0114 link against a scripted peer on loopback: handshake, errors, limits."""

import asyncio
import hashlib

import pytest
from lxml import etree

from mdm.stream import ComponentLink, LinkError, handshake_digest

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
          b"xmlns:stream='http://etherx.jabber.org/streams' id='abc123' from='mdm.localhost'>")


async def peer(script):
    """A one-connection server that runs ``script(reader, writer)``; returns its port."""
    async def handle(r, w):
        try:
            await script(r, w)
        finally:
            w.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_until(r, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await r.read(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_digest_is_xep_0114():
    assert handshake_digest("abc", "secret") == hashlib.sha1(b"abcsecret").hexdigest()


@pytest.mark.asyncio
async def test_handshake_then_stanzas_in_order():
    got = {}

    async def script(r, w):
        await read_until(r, b"<stream:stream")
        w.write(HEADER)
        got["handshake"] = await read_until(r, b"</handshake>")
        w.write(b"<handshake/><message from='localhost'><body>1</body></message><iq id='2'/>")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"</stream:stream>")
        await w.drain()

    server, port = await peer(script)
    link = ComponentLink("mdm.localhost", "secret")
    await link.connect("127.0.0.1", port)
    assert handshake_digest("abc123", "secret").encode() in got["handshake"]
    tags = [s.tag async for s in link.stanzas()]
    assert tags == ["{jabber:component:accept}message", "{jabber:component:accept}iq"]
    await link.close()
    server.close()


@pytest.mark.asyncio
async def test_wrong_secret_is_a_clear_fatal_error():
    async def script(r, w):
        await read_until(r, b"<stream:stream")
        w.write(HEADER)
        await read_until(r, b"</handshake>")
        w.write(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
        await w.drain()

    server, port = await peer(script)
    link = ComponentLink("mdm.localhost", "wrong")
    with pytest.raises(LinkError) as e:
        await link.connect("127.0.0.1", port)
    assert e.value.fatal and "not-authorized" in str(e.value) and "component.secret" in str(e.value)
    await link.close()
    server.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("payload, expect", [
    (b"<message><unclosed></message>", "malformed XML"),
    (b"<message>" + b"x" * 200_000, "exceeds"),  # counted per read: max + one 64 KiB read
])
async def test_bad_input_from_the_server_is_an_error(payload, expect):
    async def script(r, w):
        await read_until(r, b"<stream:stream")
        w.write(HEADER)
        await read_until(r, b"</handshake>")
        w.write(b"<handshake/>" + payload)
        await w.drain()
        await asyncio.sleep(0.2)

    server, port = await peer(script)
    link = ComponentLink("mdm.localhost", "s", max_stanza_size=4096)
    await link.connect("127.0.0.1", port)
    with pytest.raises(LinkError, match=expect):
        async for _ in link.stanzas():
            pass
    await link.close()
    server.close()


async def served(payload: bytes, *, hold: asyncio.Event, **link_options):
    """A peer that completes the handshake, sends ``payload`` and keeps the stream open (sending
    nothing more) until ``hold`` is set; returns the server and the connected link."""
    async def script(r, w):
        await read_until(r, b"<stream:stream")
        w.write(HEADER)
        await read_until(r, b"</handshake>")
        w.write(b"<handshake/>" + payload)
        await w.drain()
        await hold.wait()

    server, port = await peer(script)
    link = ComponentLink("mdm.localhost", "s", **link_options)
    await link.connect("127.0.0.1", port)
    return server, link


def nested(depth: int, body: str = "x") -> bytes:
    return (b"<message from='localhost'>" + b"<a>" * depth + body.encode() + b"</a>" * depth + b"</message>")


@pytest.mark.asyncio
async def test_R9_6_deeply_nested_stanzas_do_not_end_the_link():
    """libxml2 alone stops at 256 levels and the link would drop: a bridge's 300-deep message is
    read, one deeper than our limit is dropped, and the stanzas after it still arrive."""
    hold = asyncio.Event()
    payload = nested(300, "deep") + nested(5000, "too deep") + b"<iq id='after'/>"
    server, link = await served(payload, hold=hold)
    got = []
    async for s in link.stanzas():
        got.append(s)
        if len(got) == 2:
            break
    hold.set()
    assert got[0].tag == "{jabber:component:accept}message" and "".join(got[0].itertext()) == "deep"
    assert got[1].get("id") == "after"  # the 5000-deep one was dropped, the link is up
    await link.close()
    server.close()


@pytest.mark.asyncio
async def test_an_undeclared_entity_is_an_error_at_once():
    """The parser used to stop producing stanzas silently until more data came; now the link
    ends with a clear error while the server sends nothing more."""
    hold = asyncio.Event()
    server, link = await served(b"<message><body>a &nbsp; b</body></message>", hold=hold)
    with pytest.raises(LinkError, match="Entity 'nbsp' not defined"):
        await asyncio.wait_for(link.stanzas().__anext__(), 5)
    hold.set()
    await link.close()
    server.close()


@pytest.mark.asyncio
async def test_a_stream_with_a_dtd_is_refused():
    async def script(r, w):
        await read_until(r, b"<stream:stream")
        w.write(b"<?xml version='1.0'?><!DOCTYPE stream:stream []>" + HEADER[len(b"<?xml version='1.0'?>"):])
        await w.drain()
        await read_until(r, b"</handshake>")

    server, port = await peer(script)
    link = ComponentLink("mdm.localhost", "s")
    with pytest.raises(LinkError, match="DTD"):
        await link.connect("127.0.0.1", port)
    await link.close()
    server.close()


# --- the depth guard, whatever lxml (R9.6, R9.12: libxml2 2.11+ ends a document at 2048 levels) --

def guarded(max_depth: int) -> tuple[ComponentLink, list[etree._Element]]:
    """A link's parser and guard without a socket: what ``_read_more`` does with each read."""
    link = ComponentLink("mdm.localhost", "s", max_depth=max_depth)
    link._new_parser()
    link._guard.feed(b"<stream:stream xmlns='jabber:component:accept' xmlns:stream='" + STREAMS + b"'>")
    return link, link._pending  # type: ignore[return-value]


STREAMS = b"http://etherx.jabber.org/streams"


def test_R9_6_R9_12_deeper_than_libxml2_allows_is_cut_and_dropped_on_any_lxml():
    """3000 levels (past libxml2 2.11+'s 2048 even with huge_tree): dropped, the parser goes on;
    2000 levels (the message and 1999 below it) are read."""
    link, got = guarded(2000)
    link._guard.feed(nested(3000, "too deep") + nested(1999, "at the limit") + b"<iq id='after'/>")
    assert ["".join(el.itertext()) for el in got] == ["at the limit", ""]
    assert got[1].get("id") == "after"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
def test_R9_6_the_guard_is_exact_across_any_read_boundary(chunk: int):
    """Limit 3 levels below the stream: 3 deep is read, 4 deep dropped, in reads of any size; a
    ``>`` inside an attribute, comments, CDATA and empty elements do not confuse it."""
    link, got = guarded(3)
    data = (b"<message id='ok'><a x='>'><b><!-- <c> --><![CDATA[<d>]]></b></a></message>"
            b"<message id='cut'><a><b><c/><c>deeper<d/></c>x<c y=\"/>\"/></b></a></message>"
            b"<message id='empty-at-limit'><a><b/></a></message>"
            + b"".join(b"<message id='m%d'><body>%d</body></message>" % (i, i) for i in range(300)))
    for i in range(0, len(data), chunk):
        link._guard.feed(data[i:i + chunk])
    assert [el.get("id") for el in got] == ["ok", "empty-at-limit", *(f"m{i}" for i in range(300))]
    assert got[0].find(".//{jabber:component:accept}b").text == "<d>"


def test_R9_6_many_small_stanzas_in_one_read_take_the_fast_path():
    """A read holding more "<" than the headroom (a busy batch) is fed in pieces, none lost."""
    link, got = guarded(2000)
    fed: list[int] = []
    parse = link._parse
    link._guard._feed = lambda piece: (fed.append(len(piece)), parse(piece))  # type: ignore[method-assign]
    link._guard.feed(b"".join(b"<message id='m%d'><body>x</body></message>" % i for i in range(1000)))
    assert len(got) == 1000 and len(fed) <= 4  # 4000 "<" in 2000-level pieces, not a feed per tag
