"""Seeded fuzz of a real Bridge (issue 15): 20,000+ datagrams of every class the attack used,
each answered with exactly one reply per message it holds, never an ``internal`` error, never
a logged traceback; every accepted job ends with exactly one final reply."""
import logging
import math
import random
import struct
from collections import Counter

import pytest

from bridge_inproc import InProcess, dgram  # noqa: E402

SEED, N = 15, 20_000
JOBS = [f"j{i}" for i in range(12)]
WEIRD_FLOATS = [(1e306, "d"), (-1e306, "d"), (math.inf, "f"), (math.nan, "d"), (-0.0, "f"),
                (3.4e38, "f"), (1e-45, "f"), (2**62, "h"), (-2**63, "h"), (2**31 - 1, "i")]
WEIRD_STRINGS = ["²", "٣", "", "x" * 3000, "1,2,", " 20, 10", "\u00e9\u00e8", "20,10,10,10", "0",
                 "9" * 40, "../../etc/passwd", "\x01"]
GOOD_OPTIONS = [("temperature", 0.9), ("seed", 3), ("steps", "20,10"), ("mode", "ar"),
                ("channels", 1), ("top_k", 50), ("loudness", -16.0), ("cfg", 3.0)]
OPTIONS = [k for k, _ in GOOD_OPTIONS] + ["preset", "top_p", "colour"]


def value(rng):
    r = rng.random()
    if r < 0.3:
        return rng.choice(WEIRD_FLOATS)
    if r < 0.55:
        return rng.choice(WEIRD_STRINGS)
    if r < 0.8:
        return rng.choice([0, 1, 2, 4, 16, 64, 65, -1, 48000, 120])
    return (rng.uniform(-500, 500), rng.choice("fd"))


def pick(rng, good):
    """Mostly a valid value, else one of the attack's."""
    return good if rng.random() < 0.8 else value(rng)


def message(rng):
    """A message of the protocol, its arguments often wrong."""
    kind = rng.choice(["ping", "status", "transport", "capture", "generate", "continue", "cancel",
                       "nope"])
    job = rng.choice(JOBS + ["bad id!", ""])
    if kind == "transport":
        args = [pick(rng, 120.0), pick(rng, 4), pick(rng, 48000)]
    elif kind == "capture":
        args = [pick(rng, 48000)]
    elif kind == "generate":
        args = [job, pick(rng, "house"), pick(rng, 1)]
    elif kind == "continue":
        args = [job, pick(rng, 1)] + (["keep going"] if rng.random() < 0.3 else [])
    elif kind == "cancel":
        args = [job]
    else:
        args = [value(rng) for _ in range(rng.randrange(3))]
    if kind in ("generate", "continue"):
        for _ in range(rng.randrange(3)):
            key, good = rng.choice(GOOD_OPTIONS)
            args += [key, pick(rng, good)] if rng.random() < 0.8 else [rng.choice(OPTIONS), value(rng)]
    return dgram(f"/barforge/{kind}", *args)


def bundle(elements):
    return b"#bundle\0" + b"\0" * 7 + b"\1" + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def datagram(rng):
    """(data, messages it holds: the replies it must get)."""
    cls = rng.randrange(8)
    m = message(rng)
    if cls == 0:                                    # as built
        return m, 1
    if cls == 1:                                    # cut short
        return m[:rng.randrange(len(m))], 1
    if cls == 2:                                    # bytes changed
        b = bytearray(m)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(1, len(b))] = rng.randrange(256)
        return bytes(b), 1
    if cls == 3:                                    # an unsupported type tag in the tags
        comma = m.index(b",")
        tag = rng.choice(b"cTFNmrtS[]")
        return m[:comma + 1] + bytes([tag]) + m[comma + 2:], 1
    if cls == 4:                                    # a bundle of messages, some broken
        parts = [message(rng) for _ in range(rng.randrange(1, 5))]
        parts = [p if rng.random() < 0.7 else p[:len(p) // 4 * 4 - 4] + b"\0\0\0\0" for p in parts]
        parts = [p for p in parts if p]
        if rng.random() < 0.2:
            return bundle([bundle(parts)]), len(parts)
        return bundle(parts), len(parts)
    if cls == 5:                                    # a bundle whose framing lies
        b = bundle([m])
        return (b[:rng.randrange(16, len(b))] if rng.random() < 0.5
                else b[:16] + struct.pack(">i", len(m) + 4 * rng.randrange(1, 100)) + m), 1
    if cls == 6:                                    # bytes after the arguments
        return m + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))), 1
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 120)))
    return (junk.replace(b"#", b"_") or b"_"), 1    # noise


def test_every_fuzzed_message_gets_one_reply_and_every_job_one_final(tmp_path, caplog):
    b = InProcess(tmp_path, queue_size=8)   # the worker never starts: accepted jobs stay queued
    rng = random.Random(SEED)
    accepted, finals, codes = Counter(), Counter(), Counter()
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(N):
                data, want = datagram(rng)
                b.handle(data)
                replies = b.drain()
                # a cancel also sends the cancelled job's final; that one is counted apart
                job_finals = [p[0] for a, p in replies if a == "/barforge/error" and p[1] == "cancelled"]
                finals.update(job_finals)
                answers = [(a, p) for a, p in replies
                           if not (a == "/barforge/error" and p[1] == "cancelled")]
                assert len(answers) == want, (i, data, replies)
                for a, p in answers:
                    assert a.startswith("/barforge/"), (data, a)
                    if a == "/barforge/error":
                        codes[p[1]] += 1
                        assert p[1] != "internal", (data, p)
                    if a == "/barforge/accepted":
                        accepted[p[0]] += 1
        b.bridge.jobs.stop()
        for a, p in b.drain():
            if a == "/barforge/error":
                finals[p[0]] += 1
    finally:
        b.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # a job id may be accepted again after its final: each acceptance ends exactly once
    assert finals == accepted and sum(accepted.values()) > 50
    assert codes["bad_argument"] > N // 4 and codes["unknown_address"] and codes["busy"]
