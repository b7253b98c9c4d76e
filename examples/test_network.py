"""(e) The network: only ``lo``.

Each sandbox has its own network namespace with nothing but the loopback
interface. Servers on 127.0.0.1 work, and ports never collide with other tests
or with services on the host (every sandbox has its own port 8000). Nothing
outside is reachable, so a test that quietly depends on the internet fails
fast, with "Network is unreachable".
"""

from __future__ import annotations

import errno
import socket
import threading

import pytest


def test_only_loopback(sandbox: None) -> None:
    assert [name for _, name in socket.if_nameindex()] == ["lo"]


def test_local_server_works(sandbox: None) -> None:
    # A fixed, well-known port: free in every sandbox, whatever the host runs.
    with socket.create_server(("127.0.0.1", 8000)) as server:

        def echo_once() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(1024).upper())

        thread = threading.Thread(target=echo_once)
        thread.start()
        with socket.create_connection(("127.0.0.1", 8000), timeout=2) as client:
            client.sendall(b"hello")
            assert client.recv(1024) == b"HELLO"
        thread.join()


def test_outside_world_is_unreachable(sandbox: None) -> None:
    # No route at all: this fails at once instead of hanging until a timeout.
    with pytest.raises(OSError) as excinfo:
        socket.create_connection(("192.0.2.1", 80), timeout=2)  # TEST-NET-1, RFC 5737
    assert excinfo.value.errno == errno.ENETUNREACH
