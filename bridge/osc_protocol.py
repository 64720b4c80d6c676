"""PROTOCOL.md version 1 as data: raw OSC datagram -> validated requests, replies -> datagrams.

``parse_packet(data)`` is a pure function (no sockets, no server state): every message of the
packet (decoded by bridge/osc_wire.py, one set of rules for messages and bundles) becomes
either a request dataclass or an ``ErrorReply`` carrying the protocol's error code. The
server (bridge/server.py) adds what needs state: ``busy``, ``no_transport``,
``unknown_job``, ``too_long``, ``no_capture``.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Union

from pythonosc.osc_message_builder import OscMessageBuilder

from bridge import osc_wire
from engine import tempo
from engine.decoding.options import MODES

log = logging.getLogger("bridge.protocol")
PROTOCOL_VERSION = 1
PREFIX = "/barforge/"
JOB_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PRESET_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_PROMPT_CHARS = 2000
INT32 = (-2**31, 2**31 - 1)
MELODY_SOURCES = ("capture", "slot")
MAX_SLOT = 4095


@dataclass(frozen=True)
class ErrorReply:
    """``/barforge/error job code message``; ``job`` is "" without a valid job id."""

    job: str
    code: str
    message: str


@dataclass(frozen=True)
class Options:
    """The optional key/value pairs of generate / continue; None means "not given"."""

    preset: str | None = None
    mode: str | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    cfg: float | None = None
    seed: int | None = None
    steps: tuple[int, ...] | None = None
    channels: int | None = None
    loudness: float | None = None
    # the protocol's additive melody extension (docs/PROTOCOL.md, appendix): generate only
    melody: str | None = None
    melody_bars: int | None = None
    melody_slot: int | None = None

    def given(self) -> dict[str, Any]:
        """Only the options the request set."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Transport:
    bpm: Fraction
    beats_per_bar: int
    sample_rate: int


@dataclass(frozen=True)
class Capture:
    sample_rate: int


@dataclass(frozen=True)
class Generate:
    job: str
    prompt: str
    bars: int
    options: Options = field(default_factory=Options)


@dataclass(frozen=True)
class Continue:
    job: str
    bars: int
    prompt: str | None
    options: Options = field(default_factory=Options)


@dataclass(frozen=True)
class Cancel:
    job: str


Request = Union[Ping, Status, Transport, Capture, Generate, Continue, Cancel]


class _Bad(Exception):
    """Raised inside parsing; becomes ``ErrorReply(job, "bad_argument", message)``."""


def _int(value: Any, what: str, lo: int = INT32[0], hi: int = INT32[1]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be an OSC int (i), got {type(value).__name__} {value!r:.40}")
    if not lo <= value <= hi:
        raise _Bad(f"{what} must be in {lo}..{hi}, got {value}")
    return value


def _float(value: Any, what: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{what} must be an OSC float (f, or i), got {type(value).__name__} {value!r:.40}")
    value = float(value)
    if not math.isfinite(value):
        raise _Bad(f"{what} must be a finite number, got {value}")
    if not lo <= value <= hi:
        raise _Bad(f"{what} must be in {lo}..{hi}, got {value}")
    return value


def _str(value: Any, what: str, max_chars: int = MAX_PROMPT_CHARS) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} must be an OSC string (s), got {type(value).__name__} {value!r:.40}")
    if len(value) > max_chars:
        raise _Bad(f"{what} is {len(value)} characters; at most {max_chars} are accepted")
    return value


def _job(value: Any) -> str:
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise _Bad(f"job id must be 1 to 64 characters from [A-Za-z0-9._-], got {value!r:.80}")
    return value


def _steps(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    # isascii: str.isdigit() is true for '²' and other digits int() does not read
    if not 1 <= len(parts) <= 16 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise _Bad(f"steps must be 1 to 16 comma-separated positive integers like \"20,10,10,10\", got {text!r:.80}")
    steps = tuple(int(p) for p in parts)
    if not all(1 <= s <= 1000 for s in steps):
        raise _Bad(f"each of steps must be in 1..1000, got {text!r:.80}")
    return steps


def _choice(value: Any, what: str, choices: Collection[str]) -> str:
    """A string that must be one of ``choices``."""
    text = _str(value, what, 16)
    if text not in choices:
        raise _Bad(f"{what} must be one of {', '.join(choices)}, got {text!r}")
    return text


def _option(key: str, value: Any, presets: Collection[str] | None) -> tuple[str, Any]:
    if key == "preset":
        name = _str(value, "option preset", 64)
        if not PRESET_NAME.fullmatch(name) or (presets is not None and name not in presets):
            known = ", ".join(sorted(presets)) if presets is not None else "a preset name"
            raise _Bad(f"option preset {name!r:.80} is unknown; expected one of: {known}")
        return key, name
    if key == "mode":
        return key, _choice(value, "option mode", MODES)
    if key == "temperature":
        return key, _float(value, "option temperature", 1e-3, 10.0)
    if key == "top_k":
        return key, _int(value, "option top_k", 0, 100_000)
    if key == "top_p":
        return key, _float(value, "option top_p", 0.0, 1.0)
    if key == "cfg":
        return key, _float(value, "option cfg", 0.0, 100.0)
    if key == "seed":
        return key, _int(value, "option seed")
    if key == "steps":
        return key, _steps(_str(value, "option steps", 200))
    if key == "channels":
        return key, _int(value, "option channels", 1, 2)
    if key == "loudness":
        return key, _float(value, "option loudness (LUFS)", -70.0, 0.0)
    if key == "melody":
        return key, _choice(value, "option melody", MELODY_SOURCES)
    if key == "melody_bars":
        return key, _int(value, "option melody_bars", *tempo.BARS_RANGE)
    if key == "melody_slot":
        return key, _int(value, "option melody_slot", 0, MAX_SLOT)
    raise _Bad(f"unknown option {key!r:.80}; known: preset, mode, temperature, top_k, top_p, cfg, "
               "seed, steps, channels, loudness, melody, melody_bars, melody_slot")


def _check_melody(values: dict[str, Any]) -> None:
    """melody_bars goes with melody capture, melody_slot with (and only with) melody slot."""
    source = values.get("melody")
    if "melody_bars" in values and source != "capture":
        raise _Bad("option melody_bars needs option melody capture")
    if ("melody_slot" in values) != (source == "slot"):
        raise _Bad("option melody slot and option melody_slot go together")


def _options(args: list[Any], presets: Collection[str] | None) -> Options:
    if len(args) % 2:
        raise _Bad(f"options come in key/value pairs; got {len(args)} trailing arguments")
    values: dict[str, Any] = {}
    for key, value in zip(args[0::2], args[1::2]):
        if not isinstance(key, str):
            raise _Bad(f"an option key must be an OSC string, got {type(key).__name__} {key!r:.40}")
        name, parsed = _option(key, value, presets)
        if name in values:
            raise _Bad(f"option {name} given twice")
        values[name] = parsed
    _check_melody(values)
    return Options(**values)


def _arity(args: list[Any], address: str, n: int) -> None:
    if len(args) != n:
        raise _Bad(f"{address} takes {n} arguments, got {len(args)}")


def _parse_message(address: str, args: list[Any], presets: Collection[str] | None) -> Request:
    name = address[len(PREFIX):]
    if name == "ping":
        _arity(args, address, 0)
        return Ping()
    if name == "status":
        _arity(args, address, 0)
        return Status()
    if name == "transport":
        _arity(args, address, 3)
        try:
            bpm = tempo.check_bpm(_float(args[0], "bpm"))
        except ValueError as e:
            raise _Bad(str(e)) from None
        return Transport(bpm, _int(args[1], "beats_per_bar", *tempo.BEATS_PER_BAR_RANGE),
                         _int(args[2], "sample_rate", *tempo.SAMPLE_RATE_RANGE))
    if name == "capture":
        _arity(args, address, 1)
        return Capture(_int(args[0], "sample_rate", *tempo.SAMPLE_RATE_RANGE))
    if name == "cancel":
        _arity(args, address, 1)
        return Cancel(_job(args[0]))
    if name == "generate":
        if len(args) < 3:
            raise _Bad(f"{address} takes job:s prompt:s bars:i [options], got {len(args)} arguments")
        return Generate(_job(args[0]), _str(args[1], "prompt"),
                        _int(args[2], "bars", *tempo.BARS_RANGE), _options(args[3:], presets))
    if name == "continue":
        if len(args) < 2:
            raise _Bad(f"{address} takes job:s bars:i [prompt:s] [options], got {len(args)} arguments")
        rest = args[2:]
        prompt = None
        if len(rest) % 2:  # options always come in pairs, so an odd count starts with the prompt
            prompt, rest = _str(rest[0], "prompt"), rest[1:]
        options = _options(rest, presets)
        if options.melody is not None:
            raise _Bad("option melody applies to /barforge/generate only")
        return Continue(_job(args[0]), _int(args[1], "bars", *tempo.BARS_RANGE), prompt, options)
    raise LookupError(address)


def _job_of(address: str, args: list[Any]) -> str:
    """The request's job id when it carries a valid one (for error replies), else ""."""
    if address[len(PREFIX):] in ("generate", "continue", "cancel") and args:
        if isinstance(args[0], str) and JOB_ID.fullmatch(args[0]):
            return args[0]
    return ""


def parse_packet(data: bytes, presets: Collection[str] | None = None) -> list[Request | ErrorReply]:
    """Every message of one UDP datagram, validated; never raises.

    ``presets``: the preset names the server knows (None accepts any well-formed name).
    A bundle's messages are handled at once, in order (time tags are not waited for).
    """
    items = osc_wire.decode_datagram(data)
    if not items:
        return [ErrorReply("", "bad_argument", "OSC bundle holds no message")]
    return [_request(item, presets) for item in items]


def _request(item: osc_wire.Message | osc_wire.Malformed,
             presets: Collection[str] | None) -> Request | ErrorReply:
    """One decoded message as a request, or the error reply it gets."""
    if isinstance(item, osc_wire.Malformed):
        what = f"{item.address}: " if item.address else "datagram does not parse as OSC: "
        return ErrorReply(_job_of(item.address, list(item.values)), "bad_argument", f"{what}{item}"[:300])
    address, args = item.address, list(item.args)
    if not address.startswith(PREFIX):
        return ErrorReply("", "unknown_address", f"unknown address {address!r:.100}")
    try:
        return _parse_message(address, args, presets)
    except LookupError:
        return ErrorReply("", "unknown_address", f"unknown address {address!r:.100}")
    except _Bad as e:
        return ErrorReply(_job_of(address, args), "bad_argument", f"{address}: {e}")
    except Exception as e:  # a parser bug: the request is still answered
        log.exception("parsing %s failed", address)
        return ErrorReply(_job_of(address, args), "internal", f"{address}: {type(e).__name__}: {e}"[:300])


def build(address: str, *args: int | float | str) -> bytes:
    """One reply datagram; Python int -> i, float -> f, str -> s."""
    b = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, bool) or not isinstance(a, (int, float, str)):
            raise TypeError(f"reply argument {a!r} must be int, float or str")
        tag = "i" if isinstance(a, int) else "f" if isinstance(a, float) else "s"
        b.add_arg(a, tag)
    return b.build().dgram


def error(e: ErrorReply) -> bytes:
    """``/barforge/error job code message``."""
    return build(PREFIX + "error", e.job, e.code, e.message)
