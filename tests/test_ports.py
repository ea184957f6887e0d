"""free_ports: below the kernel's ephemeral range, so no outgoing connection can take a port
between our pick and the server's bind; never the same port twice in a row."""

import socket

from mdm_harness import ports


def test_ports_are_free_distinct_below_the_ephemeral_range_and_not_repeated():
    first = ports.free_ports(20)
    second = ports.free_ports(20)
    assert len(set(first + second)) == 40
    assert all(ports.LOWEST <= p < ports._ephemeral_start() for p in first + second)
    for p in first:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # free: nothing of ours holds it
