"""Unit tests for ``pytest_isolate.wire``: the framed pipe protocol."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest

from pytest_isolate.wire import (
    HEADER,
    MAGIC,
    MAX_PAYLOAD,
    FrameTooLargeError,
    Kind,
    Reader,
    WireError,
    drain,
    encode,
    new_key,
    send,
)

Message = tuple[bytes, Any]


def test_header_layout() -> None:
    assert MAGIC == b"\xa7\x1e"
    assert HEADER.size == 7
    assert MAX_PAYLOAD == 256 * 2**20
    assert Kind.ALL == frozenset({b"R", b"W", b"X", b"E", b"D", b"P", b"I"})


def test_encode_exact_bytes() -> None:
    assert encode(Kind.WARNING, {"when": "call"}) == (
        b"\xa7\x1eW\x00\x00\x00\x0f" + b'{"when":"call"}'
    )
    assert encode(Kind.DONE, None) == b"\xa7\x1eD\x00\x00\x00\x04null"


def test_encode_falls_back_to_str() -> None:
    frame = encode(Kind.REPORT, {"path": PurePosixPath("/x/y")})
    assert frame[HEADER.size :] == b'{"path":"/x/y"}'
    assert Reader().feed(frame) == [(Kind.REPORT, {"path": "/x/y"})]


PAYLOADS: list[Any] = [
    {"when": "setup"},
    {"nested": {"list": [1, 2.5, None, True, "é"], "empty": {}}},
    "just a string with \x00 and \n",
    [],
    0,
    None,
    {"big": "x" * 5000},
]


@pytest.mark.parametrize("kind", sorted(Kind.ALL))
@pytest.mark.parametrize("payload", PAYLOADS)
def test_round_trip(kind: bytes, payload: Any) -> None:
    reader = Reader()
    assert reader.feed(encode(kind, payload)) == [(kind, payload)]
    assert reader.partial is False


def test_round_trip_non_ascii_length_is_bytes() -> None:
    frame = encode(Kind.WARNING, "ü" * 3)
    (length,) = struct.unpack(">I", frame[3:7])
    # json.dumps escapes non-ASCII by default: 3 * len('\\u00fc') + 2 quotes.
    assert length == len(frame) - HEADER.size == 20
    assert Reader().feed(frame) == [(Kind.WARNING, "üüü")]


def test_split_at_every_byte_boundary() -> None:
    message: Message = (Kind.REPORT, {"outcome": "passed", "longrepr": None, "n": 12345})
    frame = encode(*message)
    for cut in range(len(frame) + 1):
        reader = Reader()
        first = reader.feed(frame[:cut])
        assert reader.partial is (0 < cut < len(frame)), cut
        second = reader.feed(frame[cut:])
        if cut < len(frame):
            assert (first, second) == ([], [message]), cut
        else:
            assert (first, second) == ([message], []), cut
        assert reader.partial is False


def test_one_byte_at_a_time_over_several_frames() -> None:
    messages: list[Message] = [
        (Kind.WARNING, {"when": "setup"}),
        (Kind.REPORT, {"outcome": "passed"}),
        (Kind.WARNING, {"message": "careful"}),
        (Kind.DONE, {}),
    ]
    stream = b"".join(encode(kind, payload) for kind, payload in messages)
    reader = Reader()
    got: list[Message] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i : i + 1])
    assert got == messages
    assert reader.partial is False


def test_several_frames_in_one_feed() -> None:
    messages: list[Message] = [
        (Kind.WARNING, {"when": "call"}),
        (Kind.EXIT, {"msg": "bye", "returncode": 3}),
        (Kind.ERROR, {"traceback": "Traceback ..."}),
    ]
    reader = Reader()
    assert reader.feed(b"".join(encode(k, p) for k, p in messages)) == messages
    assert reader.partial is False


def test_several_frames_and_a_tail() -> None:
    first = encode(Kind.WARNING, {"when": "call"})
    second = encode(Kind.DONE, {})
    reader = Reader()
    assert reader.feed(first + second[:5]) == [(Kind.WARNING, {"when": "call"})]
    assert reader.partial is True
    assert reader.feed(second[5:]) == [(Kind.DONE, {})]
    assert reader.partial is False


def test_empty_feed() -> None:
    reader = Reader()
    assert reader.feed(b"") == []
    assert reader.partial is False


def test_partial_header_only() -> None:
    reader = Reader()
    assert reader.feed(MAGIC + b"P") == []
    assert reader.partial is True


def test_short_garbage_is_only_partial() -> None:
    # Fewer bytes than a header cannot be judged yet: it is a started frame.
    reader = Reader()
    assert reader.feed(b"hello") == []
    assert reader.partial is True


def test_garbage_raises() -> None:
    with pytest.raises(WireError) as exc:
        Reader().feed(b"hello world")
    assert str(exc.value) == "unexpected bytes b'hello world'"


def test_garbage_message_is_truncated_to_16_bytes() -> None:
    with pytest.raises(WireError) as exc:
        Reader().feed(b"A" * 100)
    assert str(exc.value) == "unexpected bytes " + repr(b"A" * 16)


def test_garbage_after_short_prefix() -> None:
    reader = Reader()
    assert reader.feed(b"hel") == []
    with pytest.raises(WireError) as exc:
        reader.feed(b"lo world")
    assert str(exc.value) == "unexpected bytes b'hello world'"


def test_garbage_after_a_good_frame() -> None:
    reader = Reader()
    assert reader.feed(encode(Kind.WARNING, {"when": "call"})) == [(Kind.WARNING, {"when": "call"})]
    with pytest.raises(WireError, match=r"^unexpected bytes b'garbage!'$"):
        reader.feed(b"garbage!")


def test_bad_kind() -> None:
    frame = HEADER.pack(MAGIC, b"Z", 2) + b"{}"
    with pytest.raises(WireError) as exc:
        Reader().feed(frame)
    assert str(exc.value) == "unexpected bytes " + repr(frame)


def test_bad_magic_good_kind() -> None:
    frame = HEADER.pack(b"\xa7\x1f", Kind.WARNING, 2) + b"{}"
    with pytest.raises(WireError) as exc:
        Reader().feed(frame)
    assert str(exc.value) == "unexpected bytes " + repr(frame)


def test_oversize_length() -> None:
    with pytest.raises(WireError) as exc:
        Reader().feed(HEADER.pack(MAGIC, Kind.REPORT, MAX_PAYLOAD + 1))
    assert str(exc.value) == "frame of 268435457 bytes is larger than 268435456"


def test_max_length_is_accepted_and_waits() -> None:
    reader = Reader()
    assert reader.feed(HEADER.pack(MAGIC, Kind.REPORT, MAX_PAYLOAD) + b"{") == []
    assert reader.partial is True


@pytest.mark.parametrize(
    "payload",
    [b"{x}", b"", b"\xff\xfe\xfd", b"[1,", b'{"a":1}x'],
    ids=["not-json", "empty", "not-utf8", "truncated-json", "trailing-bytes"],
)
def test_bad_json(payload: bytes) -> None:
    frame = HEADER.pack(MAGIC, Kind.REPORT, len(payload)) + payload
    with pytest.raises(WireError) as exc:
        Reader().feed(frame)
    assert str(exc.value).startswith("undecodable frame: ")
    assert exc.value.__cause__ is None
    assert exc.value.__suppress_context__ is True


def test_partial_tracks_buffered_bytes() -> None:
    frame = encode(Kind.DONE, {})
    reader = Reader()
    assert reader.partial is False
    reader.feed(frame[:1])
    assert reader.partial is True
    reader.feed(frame[1:-1])
    assert reader.partial is True
    assert reader.feed(frame[-1:]) == [(Kind.DONE, {})]
    assert reader.partial is False


# -- over a real pipe ----------------------------------------------------------------------------


class Pipe:
    """An os.pipe() whose read end is non-blocking; each end is closed exactly once."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self._open = {self.r, self.w}
        self._lock = threading.Lock()

    def close(self, fd: int) -> None:
        with self._lock:
            if fd in self._open:
                self._open.discard(fd)
                os.close(fd)

    def close_all(self) -> None:
        for fd in (self.r, self.w):
            self.close(fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.close_all()


def _pipe_size(fd: int) -> int:
    return fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ


def _drain_until_eof(r: int, reader: Reader, limit: float = 10.0) -> list[Message]:
    got: list[Message] = []
    end = time.monotonic() + limit
    while time.monotonic() < end:
        select.select([r], [], [], 0.5)
        messages, eof = drain(r, reader)
        got += messages
        if eof:
            return got
    raise AssertionError(f"no EOF within {limit} s; got {len(got)} messages")


def test_drain_empty_pipe(pipe: Pipe) -> None:
    assert drain(pipe.r, Reader()) == ([], False)


def test_drain_reports_eof(pipe: Pipe) -> None:
    r, w = pipe.r, pipe.w
    os.write(w, encode(Kind.DONE, {}))
    pipe.close(w)
    reader = Reader()
    assert drain(r, reader) == ([(Kind.DONE, {})], True)
    assert reader.partial is False
    # EOF stays EOF.
    assert drain(r, reader) == ([], True)


def test_drain_without_eof(pipe: Pipe) -> None:
    r, w = pipe.r, pipe.w
    os.write(w, encode(Kind.WARNING, {"when": "setup"}))
    assert drain(r, Reader()) == ([(Kind.WARNING, {"when": "setup"})], False)


def test_drain_eof_mid_frame(pipe: Pipe) -> None:
    r, w = pipe.r, pipe.w
    frame = encode(Kind.REPORT, {"outcome": "failed"})
    os.write(w, frame[:10])
    pipe.close(w)
    reader = Reader()
    assert drain(r, reader) == ([], True)
    assert reader.partial is True


def test_drain_garbage_raises(pipe: Pipe) -> None:
    r, w = pipe.r, pipe.w
    os.write(w, b"hello world")
    with pytest.raises(WireError, match=r"^unexpected bytes b'hello world'$"):
        drain(r, Reader())


def test_send_and_drain_larger_than_pipe_buffer(pipe: Pipe) -> None:
    r, w = pipe.r, pipe.w
    size = _pipe_size(w)
    assert size >= 4096
    blob = "".join(chr(ord("a") + i % 26) for i in range(4 * size + 12345))
    messages: list[Message] = [
        (Kind.WARNING, {"when": "call"}),
        (Kind.REPORT, {"longrepr": blob, "n": 1}),
        (Kind.REPORT, {"longrepr": blob[::-1], "n": 2}),
        (Kind.DONE, {}),
    ]
    assert len(encode(Kind.REPORT, messages[1][1])) > 4 * size
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for kind, payload in messages:
                send(w, kind, payload)
        except BaseException as exc:
            errors.append(exc)
        finally:
            pipe.close(w)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reader = Reader()
        got = _drain_until_eof(r, reader)
    finally:
        thread.join(10)
    assert not thread.is_alive()
    assert errors == []
    assert got == messages
    assert reader.partial is False


def test_a_keyed_channel_round_trips_and_refuses_the_default_key() -> None:
    key = new_key()
    assert len(key) == 16 and key != new_key()
    frame = encode(Kind.DONE, {}, key)
    assert frame[:16] == key and len(frame) == 16 + 5 + 2
    assert Reader(key).feed(frame) == [(Kind.DONE, {})]
    with pytest.raises(WireError, match="unexpected bytes"):
        Reader(key).feed(encode(Kind.DONE, {}) + b"\0" * 16)  # a frame without the key
    with pytest.raises(WireError, match="unexpected bytes"):
        Reader().feed(frame)


def test_oversize_frame_says_how_large() -> None:
    with pytest.raises(FrameTooLargeError) as exc:
        Reader().feed(HEADER.pack(MAGIC, Kind.REPORT, 300 * 2**20))
    assert exc.value.length == 300 * 2**20
