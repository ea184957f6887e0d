"""R6 counters on HTTP ``/metrics`` in Prometheus text format, served from the component's own
event loop (no thread touches the core), bound to localhost by default.

Every counter is exported as a gauge under its vendor name exactly (``MDMBufferFlushes``), so a
dashboard can search for the names the requirements use; prometheus-client renders the format.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

HELP = {
    "MDMSessions": "Sessions that currently have MDM enabled (XEP-0280 carbons)",
    "MDMSilentModeSessions": "Sessions in the background while the user has another active client",
    "MDMQuietModeSessions": "Sessions in the background while the user has no active client",
    "MDMBufferFlushes": "Total buffer flushes",
    "MDMBufferFlushesLimitReached": "Total flushes caused by reaching the overall buffer limit",
    "MDMBufferFlushPacketCount": "Stanzas flushed in the last period",
    "MDMBufferAvgQueuedTime": "Average seconds a flushed stanza waited in a buffer, last period",
    "JsmClientSessionsActive": "Logged-in client sessions on this node (R7.1)",
    "JsmPhantomSessionsActive": "Sessions kept for a device that is away (XEP-0198 hibernated, R7.1)",
    "JsmHybridSessionsActive": "Sessions of users bridged to another system (capacity.hybrid_users, R7.1)",
    "JSMSessionsExceedsThreshold": "1 while the sessions stay above the capacity threshold (R7.4)",
    "mdm_component_active": "1 while this instance is the active one, 0 on standby (R9.9)",
}


class _Collector:
    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self):
        for name, value in self._read().items():
            yield GaugeMetricFamily(name, HELP.get(name, name), value=value)


def registry_for(read: Callable[[], dict[str, float]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(read))
    return registry


class MetricsServer:
    def __init__(self, read: Callable[[], dict[str, float]], host: str, port: int) -> None:
        self._registry = registry_for(read)
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%s/metrics", self.host, self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"only /metrics is served here\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
