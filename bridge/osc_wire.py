"""OSC 1.0 datagrams -> messages, strictly, with one set of rules for messages and bundles.

python-osc's parser pads a cut-off argument, skips type tags it does not know and accepts a
bundle element longer than the datagram; a request changed that way must not run. Here a
message is an address, a type tag string and arguments that fill the rest of it exactly;
a bundle is ``#bundle``, a time tag and elements that fill it exactly. Anything else is a
``Malformed`` naming what was wrong, with whatever was read before it (so an error reply can
still carry the request's job id).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

BUNDLE_TAG = b"#bundle\0"
BUNDLE_HEADER_BYTES = 16      # "#bundle\0" + 8-byte time tag
MAX_BUNDLE_DEPTH = 8          # nested bundles deeper than this are refused, not recursed into
# Type tags decoded into values: int32, float32, float64, int64, string, blob.
SUPPORTED_TAGS = "ifdhsb"
_FIXED = {"i": (">i", 4), "f": (">f", 4), "d": (">d", 8), "h": (">q", 8)}


@dataclass(frozen=True)
class Message:
    """One OSC message: its address and decoded arguments."""

    address: str
    args: tuple[Any, ...]


class Malformed(Exception):
    """A message or datagram that does not follow OSC 1.0; ``address`` and ``values`` hold
    what was decoded before the fault ("" and () when nothing was)."""

    def __init__(self, message: str, address: str = "", values: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.address, self.values = address, values


def _padded(n: int) -> int:
    """Bytes an OSC string of n characters takes with its NUL and padding to 4."""
    return (n + 4) & ~3


def _string(data: bytes, pos: int, what: str) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise Malformed(f"{what} has no terminating NUL")
    nxt = pos + _padded(end - pos)
    if nxt > len(data):
        raise Malformed(f"{what} is cut off before its padding to 4 bytes")
    try:
        return data[pos:end].decode("utf-8"), nxt
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not UTF-8") from None


def _argument(data: bytes, pos: int, tag: str, index: int) -> tuple[Any, int]:
    what = f"argument {index + 1} ({tag!r})"
    if tag in _FIXED:
        fmt, size = _FIXED[tag]
        if len(data) - pos < size:
            raise Malformed(f"{what} is cut off: {max(0, len(data) - pos)} of {size} bytes")
        return struct.unpack_from(fmt, data, pos)[0], pos + size
    if tag == "s":
        return _string(data, pos, what)
    # "b": an int32 size, then that many bytes padded to 4
    if len(data) - pos < 4:
        raise Malformed(f"{what} is cut off before its size")
    size = struct.unpack_from(">i", data, pos)[0]
    start = pos + 4
    if size < 0 or start + ((size + 3) & ~3) > len(data):
        raise Malformed(f"{what} says {size} bytes; {len(data) - start} are left")
    return data[start:start + size], start + ((size + 3) & ~3)


def decode_message(data: bytes) -> Message:
    """One message that fills ``data`` exactly; raises ``Malformed``.

    A message without a type tag string (allowed to old senders by OSC 1.0) has no arguments.
    """
    if not data.startswith(b"/"):
        raise Malformed("an OSC message starts with an address beginning with '/'")
    address, pos = _string(data, 0, "the address")
    if pos == len(data):
        return Message(address, ())
    if data[pos:pos + 1] != b",":
        raise Malformed("the type tag string does not start with ','", address)
    tags, pos = _string(data, pos, "the type tag string")
    args: list[Any] = []
    for i, tag in enumerate(tags[1:]):
        if tag not in SUPPORTED_TAGS:
            raise Malformed(f"OSC type tag {tag!r} is not supported (supported: "
                            f"{', '.join(SUPPORTED_TAGS)})", address, tuple(args))
        try:
            value, pos = _argument(data, pos, tag, i)
        except Malformed as e:
            raise Malformed(str(e), address, tuple(args)) from None
        args.append(value)
    if pos != len(data):
        raise Malformed(f"{len(data) - pos} bytes follow the arguments its type tags "
                        f"{tags!r} describe", address, tuple(args))
    return Message(address, tuple(args))


def _bundle(data: bytes, depth: int) -> list[Message | Malformed]:
    if depth >= MAX_BUNDLE_DEPTH:
        raise Malformed(f"bundles nested more than {MAX_BUNDLE_DEPTH} deep")
    if len(data) < BUNDLE_HEADER_BYTES:
        raise Malformed(f"a bundle of {len(data)} bytes is shorter than its 16-byte header")
    out: list[Message | Malformed] = []
    pos = BUNDLE_HEADER_BYTES
    while pos < len(data):
        if len(data) - pos < 4:
            raise Malformed("a bundle element's size is cut off")
        size = struct.unpack_from(">i", data, pos)[0]
        pos += 4
        if size <= 0 or size % 4 or size > len(data) - pos:
            raise Malformed(f"a bundle element says {size} bytes; expected a positive multiple "
                            f"of 4 within the {len(data) - pos} bytes left")
        element = data[pos:pos + size]
        pos += size
        if element.startswith(BUNDLE_TAG):
            out.extend(_bundle(element, depth + 1))
            continue
        try:
            out.append(decode_message(element))
        except Malformed as e:
            out.append(e)
    return out


def decode_datagram(data: bytes) -> list[Message | Malformed]:
    """Every message of a datagram, in order; never raises.

    A message that breaks the rules becomes its ``Malformed`` in place (its bundle's other
    messages are still decoded); a bundle whose framing is broken is one ``Malformed``.
    """
    if data.startswith(BUNDLE_TAG):
        try:
            return _bundle(data, 0)
        except Malformed as e:
            return [e]
    try:
        return [decode_message(data)]
    except Malformed as e:
        return [e]
