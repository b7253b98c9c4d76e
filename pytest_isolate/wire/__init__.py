"""Framed messages from the test process to pytest, over one pipe.

A frame is ``key kind length payload``: the channel's key, one kind byte, a
4-byte big-endian payload length, then a UTF-8 JSON payload. One parser, one
error type: anything else on the pipe (a test writing to the pipe's fd, a child
dying mid-frame) is a ``WireError``, never a hang or a mis-parse.

The key defaults to two magic bytes. A test process's channel has a key of its own
(``new_key``), made by pytest's process for it: a test that finds the pipe and writes a
well-formed frame to it (a forged "done") writes garbage, not a report. (Code that runs
in the test process can always reach the key in its memory, as it can patch pytest's
own reporting: that is the test lying about its result, not an accident.)
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import struct
from typing import Any, Final

__all__ = ["Kind", "WireError", "FrameTooLargeError", "Reader", "encode", "send", "new_key"]

MAGIC: Final = b"\xa7\x1e"
HEADER: Final = struct.Struct(">2scI")
MAX_PAYLOAD: Final = 256 * 2**20


class Kind:
    REPORT: Final = b"R"  # pytest_report_to_serializable(...)
    WARNING: Final = b"W"  # a pytest_warning_recorded call
    EXIT: Final = b"X"  # pytest.exit() was called: {"msg", "returncode"}
    ERROR: Final = b"E"  # the plugin failed inside the test process: {"traceback"}
    DONE: Final = b"D"  # the protocol finished normally
    PRIOR: Final = b"P"  # a report of an item run before the test, in its process
    INTERRUPT: Final = b"I"  # KeyboardInterrupt ended the protocol: {"where"}

    ALL: Final = frozenset({REPORT, WARNING, EXIT, ERROR, DONE, PRIOR, INTERRUPT})


class WireError(Exception):
    """Bytes on the pipe that are not a well-formed frame.

    ``messages`` holds the whole frames that were read before the bad bytes.
    """

    def __init__(self, message: str, messages: list[tuple[bytes, Any]] | None = None) -> None:
        super().__init__(message)
        self.messages = messages or []


class FrameTooLargeError(WireError):
    """A frame whose payload is larger than ``MAX_PAYLOAD``: ``length`` bytes."""

    def __init__(self, length: int, messages: list[tuple[bytes, Any]] | None = None) -> None:
        super().__init__(f"frame of {length} bytes is larger than {MAX_PAYLOAD}", messages)
        self.length = length


KEY_SIZE: Final = 16


def new_key() -> bytes:
    """A channel's own key, in place of ``MAGIC``."""
    return secrets.token_bytes(KEY_SIZE)


def _header(key: bytes) -> struct.Struct:
    return HEADER if key == MAGIC else struct.Struct(f">{len(key)}scI")


def encode(kind: bytes, payload: Any, key: bytes = MAGIC) -> bytes:
    data = json.dumps(payload, default=str, separators=(",", ":")).encode()
    return _header(key).pack(key, kind, len(data)) + data


def send(fd: int, kind: bytes, payload: Any, key: bytes = MAGIC) -> None:
    """Write one whole frame (blocking; the reader drains concurrently)."""
    view = memoryview(encode(kind, payload, key))
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            continue
        view = view[written:]


class Reader:
    """Incremental parser: ``feed`` bytes, get whole ``(kind, payload)`` messages."""

    def __init__(self, key: bytes = MAGIC) -> None:
        self._buf = bytearray()
        self._key = key
        self._header = _header(key)

    @property
    def partial(self) -> bool:
        """Whether a frame was started but not finished."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[tuple[bytes, Any]]:
        self._buf += data
        out: list[tuple[bytes, Any]] = []
        header = self._header
        while len(self._buf) >= header.size:
            key, kind, length = header.unpack_from(self._buf)
            if key != self._key or kind not in Kind.ALL:
                raise WireError(f"unexpected bytes {bytes(self._buf[:16])!r}", out)
            if length > MAX_PAYLOAD:
                raise FrameTooLargeError(length, out)
            end = header.size + length
            if len(self._buf) < end:
                break
            try:
                payload = json.loads(self._buf[header.size : end])
            except ValueError as exc:
                raise WireError(f"undecodable frame: {exc}", out) from None
            del self._buf[:end]
            out.append((kind, payload))
        return out


def drain(fd: int, reader: Reader) -> tuple[list[tuple[bytes, Any]], bool]:
    """Read what is buffered on a non-blocking fd; return messages and whether EOF was seen."""
    out: list[tuple[bytes, Any]] = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return out, False
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        if not data:
            return out, True
        try:
            out += reader.feed(data)
        except WireError as exc:
            exc.messages = out + exc.messages
            raise
