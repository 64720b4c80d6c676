"""PROTOCOL.md requests from raw datagrams (no sockets): addresses, options, every bad input."""
import math
import os
import struct
from fractions import Fraction

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge import osc_protocol as p

PRESETS = {"house", "fast"}


def dgram(address, *args):
    b = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, tuple):  # (value, explicit type tag)
            b.add_arg(*a)
        else:
            b.add_arg(a)
    return b.build().dgram


def one(data):
    out = p.parse_packet(data, PRESETS)
    assert len(out) == 1
    return out[0]


def error_code(data):
    r = one(data)
    assert isinstance(r, p.ErrorReply), r
    return r.code


def test_every_address_parses():
    assert one(dgram("/barforge/ping")) == p.Ping()
    assert one(dgram("/barforge/status")) == p.Status()
    assert one(dgram("/barforge/transport", 120.0, 4, 48000)) == p.Transport(Fraction(120), 4, 48000)
    assert one(dgram("/barforge/capture", 44100)) == p.Capture(44100)
    assert one(dgram("/barforge/cancel", "j1")) == p.Cancel("j1")
    g = one(dgram("/barforge/generate", "j.1-A_b", "house beat", 4))
    assert g == p.Generate("j.1-A_b", "house beat", 4, p.Options())
    c = one(dgram("/barforge/continue", "j2", 2))
    assert c == p.Continue("j2", 2, None, p.Options())


def test_int_accepted_where_float_is_expected():
    t = one(dgram("/barforge/transport", 128, 4, 44100))
    assert t.bpm == 128 and isinstance(t, p.Transport)
    g = one(dgram("/barforge/generate", "j", "x", 1, "temperature", 1, "cfg", 3))
    assert g.options.temperature == 1.0 and g.options.cfg == 3.0


def test_float32_bpm_is_rounded_to_a_thousandth():
    assert one(dgram("/barforge/transport", 93.7, 4, 48000)).bpm == Fraction(937, 10)


def test_all_option_keys():
    g = one(dgram("/barforge/generate", "j", "x", 2, "preset", "house", "mode", "magnet",
                  "temperature", 0.9, "top_k", 200, "top_p", 0.5, "cfg", 2.5, "seed", 7,
                  "steps", "20,10,10,10", "channels", 1, "loudness", -16.0))
    o = g.options
    assert (o.preset, o.mode, o.top_k, o.seed, o.steps, o.channels) == \
        ("house", "magnet", 200, 7, (20, 10, 10, 10), 1)
    assert o.temperature == pytest.approx(0.9) and o.top_p == 0.5 and o.loudness == -16.0


def test_continue_prompt_is_told_apart_by_the_count():
    c = one(dgram("/barforge/continue", "j", 1, "keep the groove", "seed", 3))
    assert c.prompt == "keep the groove" and c.options.seed == 3
    c = one(dgram("/barforge/continue", "j", 1, "seed", 3))
    assert c.prompt is None and c.options.seed == 3


@pytest.mark.parametrize("data", [
    dgram("/barforge/generate", "j", 5, 2),                         # prompt of wrong type
    dgram("/barforge/generate", "j", "x", 2.0),                     # bars as float
    dgram("/barforge/generate", "j", "x", 0),                       # bars 0
    dgram("/barforge/generate", "j", "x", 1000),                    # bars 1000
    dgram("/barforge/generate", "j", "x", 65),
    dgram("/barforge/generate", "j", "x"),                          # missing bars
    dgram("/barforge/generate", "j", "x", 2, "colour", "red"),      # unknown option
    dgram("/barforge/generate", "j", "x", 2, "seed"),               # option without value
    dgram("/barforge/generate", "j", "x", 2, "seed", 1.5),          # option of wrong type
    dgram("/barforge/generate", "j", "x", 2, "seed", 1, "seed", 2),
    dgram("/barforge/generate", "j", "x", 2, "temperature", "hot"),
    dgram("/barforge/generate", "j", "x", 2, "temperature", math.nan),
    dgram("/barforge/generate", "j", "x", 2, "top_p", 1.5),
    dgram("/barforge/generate", "j", "x", 2, "channels", 3),
    dgram("/barforge/generate", "j", "x", 2, "mode", "diffusion"),
    dgram("/barforge/generate", "j", "x", 2, "steps", "20,x"),
    dgram("/barforge/generate", "j", "x", 2, "preset", "nonexistent"),
    dgram("/barforge/generate", "j", "x", 2, "loudness", math.inf),
    dgram("/barforge/generate", "j", "x" * 5000, 2),                # oversized prompt
    dgram("/barforge/generate", "j" * 65, "x", 2),                  # job id too long
    dgram("/barforge/generate", "../etc", "x", 2),                  # job id with '/'
    dgram("/barforge/generate", "", "x", 2),
    dgram("/barforge/generate", "j", "x", (True, "T")),
    dgram("/barforge/transport", 0.0, 4, 48000),                    # bpm 0
    dgram("/barforge/transport", math.nan, 4, 48000),               # NaN
    dgram("/barforge/transport", 19.9, 4, 48000),
    dgram("/barforge/transport", 400.5, 4, 48000),
    dgram("/barforge/transport", 120.0, 0, 48000),
    dgram("/barforge/transport", 120.0, 4, 7999),
    dgram("/barforge/transport", 120.0, 4, 48000.0),                # rate as float
    dgram("/barforge/transport", "120", 4, 48000),
    dgram("/barforge/transport", 120.0, 4),
    dgram("/barforge/capture", 200000),
    dgram("/barforge/ping", 1),
    dgram("/barforge/cancel"),
    dgram("/barforge/cancel", 5),
    dgram("/barforge/continue", "j", 1, "prompt", "seed"),          # odd options after prompt
])
def test_bad_arguments(data):
    assert error_code(data) == "bad_argument"


def test_error_carries_the_job_id_when_it_was_valid():
    r = one(dgram("/barforge/generate", "job7", "x", 0))
    assert r.job == "job7" and "bars" in r.message
    assert one(dgram("/barforge/generate", "bad id!", "x", 0)).job == ""


def test_error_messages_name_the_input():
    assert "colour" in one(dgram("/barforge/generate", "j", "x", 2, "colour", "red")).message
    assert "bpm" in one(dgram("/barforge/transport", 0.0, 4, 48000)).message


@pytest.mark.parametrize("address", ["/barforge/nope", "/other/ping", "/barforge", "/barforge/ping/x"])
def test_unknown_address(address):
    assert error_code(dgram(address)) == "unknown_address"


def test_non_utf8_string_is_bad_argument():
    data = dgram("/barforge/generate", "j", "abcd", 2)
    data = data.replace(b"abcd", b"\xff\xfe\xfd\xfc")
    assert error_code(data) == "bad_argument"


def test_unsupported_type_tag_is_bad_argument():
    # ",sc" : a char argument python-osc would skip silently
    data = b"/barforge/cancel\0\0\0\0" + b",sc\0" + b"j\0\0\0" + struct.pack(">i", 65)
    assert error_code(data) == "bad_argument"


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_never_raise(seed):
    rng = __import__("random").Random(seed)
    data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    for prefix in (b"", b"/barforge/generate\0\0", b"#bundle\0"):
        out = p.parse_packet(prefix + data, PRESETS)
        assert out and all(isinstance(r, (p.ErrorReply, *p.Request.__args__)) for r in out)


def test_random_bytes_are_bad_argument():
    assert error_code(os.urandom(64).replace(b"/", b"x").replace(b"#", b"x")) == "bad_argument"
    assert error_code(b"") == "bad_argument"
    assert error_code(b"/barforge/generate\0\0,sss") == "bad_argument"  # truncated


def test_bundle_messages_are_each_handled():
    b = OscBundleBuilder(IMMEDIATELY)
    b.add_content(OscMessageBuilder("/barforge/ping").build())
    b.add_content(OscMessageBuilder("/barforge/nope").build())
    out = p.parse_packet(b.build().dgram, PRESETS)
    assert out[0] == p.Ping() and out[1].code == "unknown_address"


def test_replies_carry_protocol_types():
    m = OscMessage(p.build("/barforge/done", "j", 3, 96000, 48000, 2, -1.0, "/tmp/a.wav"))
    assert m.params == ["j", 3, 96000, 48000, 2, -1.0, "/tmp/a.wav"]
    assert p.build("/barforge/done", -1.0).find(b",f") > 0
    e = OscMessage(p.error(p.ErrorReply("", "busy", "full")))
    assert (e.address, e.params) == ("/barforge/error", ["", "busy", "full"])


# ---- issue 15: every request answered, one parser, exact argument bytes --------------------

def test_huge_bpm_and_non_ascii_steps_are_bad_argument_not_a_crash():
    assert error_code(dgram("/barforge/transport", (1e306, "d"), 4, 48000)) == "bad_argument"
    assert error_code(dgram("/barforge/transport", (-1e306, "d"), 4, 48000)) == "bad_argument"
    r = one(dgram("/barforge/generate", "j9", "x", 2, "steps", "²"))
    assert (r.code, r.job) == ("bad_argument", "j9") and "steps" in r.message


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_cut_off_float_is_bad_argument(cut):
    data = dgram("/barforge/generate", "j", "x", 2, "temperature", 1.0)
    r = one(data[:-cut])
    assert isinstance(r, p.ErrorReply) and (r.code, r.job) == ("bad_argument", "j"), r


@pytest.mark.parametrize("data", [
    dgram("/barforge/ping") + b"\0\0\0\0",                               # bytes past the tags
    dgram("/barforge/cancel", "j") + b"junk",
    dgram("/barforge/transport", 120.0, 4, 48000)[:-4],                  # a whole argument missing
    dgram("/barforge/cancel", "job1")[:-2],                              # string padding cut
    dgram("/barforge/cancel", (b"abc", "b"))[:-1],                        # blob cut
])
def test_arguments_must_fill_their_type_tags_exactly(data):
    assert error_code(data) == "bad_argument"


def bundle(*elements):
    return b"#bundle\0" + b"\0" * 7 + b"\1" + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def test_a_bundle_follows_the_message_rules():
    bad_tag = b"/barforge/cancel\0\0\0\0" + b",sc\0" + b"j\0\0\0" + struct.pack(">i", 65)
    out = p.parse_packet(bundle(dgram("/barforge/ping"), bad_tag), PRESETS)
    assert out[0] == p.Ping() and out[1].code == "bad_argument" and out[1].job == "j"
    cut = dgram("/barforge/generate", "j", "x", 2, "temperature", 1.0)[:-2]
    assert one(bundle(cut)).code == "bad_argument"


@pytest.mark.parametrize("data", [
    bundle(dgram("/barforge/ping"))[:-4],                                # element longer than the rest
    bundle(dgram("/barforge/ping")) + b"\0\0\0",                         # size cut off
    b"#bundle\0" + b"\0" * 8 + struct.pack(">i", 1 << 30) + dgram("/barforge/ping"),
    b"#bundle\0" + b"\0" * 8 + struct.pack(">i", -4) + dgram("/barforge/ping"),
    b"#bundle\0\0\0",                                                    # header cut off
])
def test_a_bundle_whose_elements_do_not_fit_is_bad_argument(data):
    assert error_code(data) == "bad_argument"


def test_unsupported_tag_keeps_the_readable_job_id():
    data = b"/barforge/cancel\0\0\0\0" + b",sT\0" + b"job5\0\0\0\0"
    r = one(data)
    assert (r.code, r.job) == ("bad_argument", "job5") and "'T'" in r.message


def test_nested_bundles_are_decoded_up_to_a_depth():
    inner = bundle(dgram("/barforge/ping"))
    assert one(bundle(inner)) == p.Ping()
    deep = dgram("/barforge/ping")
    for _ in range(20):
        deep = bundle(deep)
    assert error_code(deep) == "bad_argument"
