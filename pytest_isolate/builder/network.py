"""The sandbox's network: a fresh network namespace has only ``lo``, and it is down.

``SIOCSIFFLAGS`` on any socket brings it up in ~0.3 ms; the kernel then adds
127.0.0.1/8 and ::1 itself. (pyroute2 costs ~300 ms to import and 5-20 ms per
call, so it stays off the per-test path.)
"""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
