"""``mdm-component doctor --config FILE`` (also ``--check --live``): is the whole chain up?

1. the config is valid (as ``--check``);
2. each server address answers an XEP-0114 stream header;
3. if the component runs (its ``/metrics`` answers): whether it is connected and serving, which
   means the bridge answered its handshake with the session list (``mdm_component_active 1``);
4. if it does not run: doctor logs in as the component itself (the same JID and secret) and waits
   for the bridge's ``<sync/>`` from every host in ``component.hosts``, then logs out. The bridge
   logs the connect and the disconnect; users get stock delivery meanwhile, as with no component.

One line per finding, exit 0 when the bridge answers, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re

from .config import Config

STREAM_NS = "http://etherx.jabber.org/streams"
BRIDGE_NS = "urn:x-open-mdm:bridge:0"


async def _metrics(cfg: Config, timeout: float) -> dict[str, float] | None:
    if not cfg.metrics_port:
        return None
    host = "127.0.0.1" if cfg.metrics_bind in ("0.0.0.0", "", "::") else cfg.metrics_bind
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, cfg.metrics_port), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _header(jid: str) -> bytes:
    return (f"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
            f"xmlns:stream='{STREAM_NS}' to='{jid}'>").encode()


async def _read_until(reader: asyncio.StreamReader, pattern: re.Pattern[bytes], timeout: float,
                      buf: bytearray) -> re.Match[bytes] | None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        m = pattern.search(buf)
        if m:
            return m
        left = end - loop.time()
        if left <= 0:
            return None
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return None
        if not chunk:
            return pattern.search(buf)
        buf += chunk


async def _probe(cfg: Config, host: str, port: int, timeout: float, login: bool) -> tuple[bool, list[str]]:
    lines: list[str] = []
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as e:
        return False, [f"FAIL {host}:{port}: no connection ({e.strerror if isinstance(e, OSError) else 'timeout'}); "
                       f"is the server running, and is this its component port?"]
    buf = bytearray()
    if not login:
        # The component is connected: only see that the port answers. Opening a second stream for
        # its JID would make Prosody fire component-disconnected when it closes, and the bridge
        # would fall back to stock delivery while the real component is still connected.
        writer.close()
        return True, [f"ok   {host}:{port} accepts connections (the component's link)"]
    try:
        writer.write(_header(cfg.jid))
        m = await _read_until(reader, re.compile(rb"<stream:stream[^>]*\sid=['\"]([^'\"]+)['\"][^>]*>"), timeout, buf)
        if m is None:
            err = re.search(rb"<stream:error>.*?</stream:error>", bytes(buf), re.S)
            why = err.group(0).decode(errors="replace") if err else bytes(buf[:200]).decode(errors="replace")
            return False, [f"FAIL {host}:{port}: no XEP-0114 stream for {cfg.jid}: {why or 'no answer'}; is a "
                           f"Component (Prosody) / ejabberd_service listener (ejabberd) configured for it?"]
        lines.append(f"ok   {host}:{port} accepts a component stream for {cfg.jid}")
        digest = hashlib.sha1(bytes(m.group(1)) + cfg.secret.encode()).hexdigest()
        del buf[:m.end()]
        writer.write(f"<handshake>{digest}</handshake>".encode())
        m2 = await _read_until(reader, re.compile(rb"<handshake\s*/>|<handshake>\s*</handshake>|</stream:stream>|"
                                                  rb"<stream:error>.*?</stream:error>", re.S), timeout, buf)
        if m2 is None or not m2.group(0).startswith(b"<handshake"):
            why = m2.group(0).decode(errors="replace") if m2 else "no answer"
            return False, lines + [f"FAIL handshake refused ({why}): component.secret must be the server's "
                                   f"component_secret (Prosody) / listener password (ejabberd) for {cfg.jid}"]
        lines.append(f"ok   handshake accepted for {cfg.jid}")
        del buf[:m2.end()]
        missing = set(cfg.hosts)
        sync = re.compile(rb"<message[^>]*\sfrom=['\"]([^'\"]+)['\"][^>]*>\s*<events[^>]*" + BRIDGE_NS.encode()
                          + rb"[^>]*>\s*<sync", re.S)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while missing and loop.time() < end:
            m3 = await _read_until(reader, sync, end - loop.time(), buf)
            if m3 is None:
                break
            sender = bytes(m3.group(1)).decode()
            missing.discard(sender)
            lines.append(f"ok   the bridge on {sender} answered (it sent <sync/> and its sessions)")
            del buf[:m3.end()]
        for h in sorted(missing):
            lines.append(f"FAIL no answer from a bridge on {h} within {timeout:g}s: is mod_mdm_bridge loaded for "
                         f"{h}, with mdm_component / component = {cfg.jid}? See the server's log")
        writer.write(b"</stream:stream>")
        await writer.drain()
        return not missing, lines
    except (OSError, ConnectionError) as e:
        return False, lines + [f"FAIL {host}:{port}: {e}"]
    finally:
        writer.close()


async def diagnose(cfg: Config, timeout: float = 10.0) -> tuple[bool, list[str]]:
    lines: list[str] = []
    metrics = await _metrics(cfg, timeout)
    running = metrics is not None
    if running:
        lines.append(f"ok   the component runs (metrics on {cfg.metrics_bind}:{cfg.metrics_port})")
        counters = {k: v for k, v in metrics.items() if k.startswith("MDM")}  # type: ignore[union-attr]
        if counters:
            lines.append("     counters: " + ", ".join(f"{k}={v:g}" for k, v in sorted(counters.items())))
    else:
        lines.append(f"note the component does not answer on {cfg.metrics_bind}:{cfg.metrics_port} (not running, "
                     f"or metrics.port = 0): doctor logs in as {cfg.jid} itself")
    ok = True
    for host, port in cfg.server_addresses():
        good, found = await _probe(cfg, host, port, timeout, login=not running)
        lines += found
        ok = ok and good
    if running:
        if metrics.get("mdm_component_active", 0.0) == 1.0:  # type: ignore[union-attr]
            lines.append("ok   the component is connected and serving: the bridge answered with its sessions")
        else:
            ok = False
            lines.append("FAIL the component runs but is not serving (not connected, or a standby of an HA pair); "
                         "see its log")
    lines.append("the bridge answers: MDM is on" if ok else "the bridge does not answer: users get stock delivery")
    return ok, lines


def run(cfg: Config, timeout: float = 10.0) -> int:
    ok, lines = asyncio.run(diagnose(cfg, timeout))
    for line in lines:
        print(line)
    return 0 if ok else 1
