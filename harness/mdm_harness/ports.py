"""Free loopback TCP ports for generated server configs.

Picked below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``): a port the kernel
handed out for ``bind(0)`` is one it may give next to any outgoing connection's local end, and
between our pick and the server's bind a client connecting somewhere would then take the
server's port (the server fails to start). Below the range only an explicit bind takes a port.
A port handed out is not handed out again by this process for a while, so two servers started
one after the other never get the same one before the first has bound it."""

from __future__ import annotations

import random
import socket
import time
from collections import OrderedDict

LOWEST = 10000
_REUSE_AFTER = 300.0  # seconds before a port handed out may be handed out again
_handed: OrderedDict[int, float] = OrderedDict()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1, none handed out by this process lately."""
    now = time.monotonic()
    while _handed and next(iter(_handed.values())) < now - _REUSE_AFTER:
        _handed.popitem(last=False)
    high = _ephemeral_start() - 1
    if high - LOWEST < 1000:  # an unusual range: the kernel's own picks, as before
        return _kernel_ports(n)
    ports: list[int] = []
    for _ in range(100 * n):
        port = random.randint(LOWEST, high)
        if port not in _handed and port not in ports and _bindable(port):
            ports.append(port)
            if len(ports) == n:
                break
    else:
        raise RuntimeError(f"no {n} free loopback ports between {LOWEST} and {high}")
    for port in ports:
        _handed[port] = now
    return ports


def _kernel_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
