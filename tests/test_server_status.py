"""barforge_server_status.c (what the player shows of the server) on the replies of
docs/PROTOCOL.md, built with python-osc: compiled into a small shared library and called
through ctypes."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

osc_builder = pytest.importorskip("pythonosc.osc_message_builder")
NATIVE = Path(__file__).resolve().parent.parent / "plugin_host" / "native"
pytestmark = pytest.mark.skipif(not shutil.which("cc"), reason="needs a C compiler")
NOT_CONNECTED, IDLE, QUEUED, GENERATING, DONE, ERROR = range(6)


class Status(ctypes.Structure):
    _fields_ = [("state", ctypes.c_int), ("progress", ctypes.c_float), ("error", ctypes.c_int)]


@pytest.fixture(scope="module")
def apply(tmp_path_factory):
    so = tmp_path_factory.mktemp("status") / "libstatus.so"
    subprocess.run(["cc", "-std=c11", "-O2", "-Wall", "-Werror", "-shared", "-fPIC",
                    str(NATIVE / "barforge_server_status.c"), "-o", str(so)], check=True)
    fn = ctypes.CDLL(str(so)).bf_server_status_apply
    fn.argtypes = [ctypes.POINTER(Status), ctypes.c_char_p, ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def call(st: Status, address: str, *args) -> int:
        b = osc_builder.OscMessageBuilder(address=address)
        for a in args:
            b.add_arg(a)
        data = b.build().dgram
        return fn(ctypes.byref(st), data, len(data))

    return call


def test_a_job_goes_queued_generating_done(apply):
    st = Status(IDLE, 0.0, 0)
    assert apply(st, "/barforge/accepted", "job-1") == 1 and st.state == QUEUED
    assert apply(st, "/barforge/progress", "job-1", 0.25) == 1
    assert (st.state, st.progress) == (GENERATING, 0.25)
    assert apply(st, "/barforge/progress", "job-1", 7.0) == 1 and st.progress == 1.0  # clamped
    assert apply(st, "/barforge/done", "job-1", 0, 96000, 48000, 2, -1.0, "/tmp/x.wav") == 1
    assert (st.state, st.progress, st.error) == (DONE, 1.0, 0)


@pytest.mark.parametrize("code,index", [("unknown_address", 1), ("busy", 4), ("internal", 10),
                                        ("something_new", 0)])
def test_an_error_keeps_its_protocol_code(apply, code, index):
    st = Status(QUEUED, 0.5, 0)
    assert apply(st, "/barforge/error", "job-1", code, "why") == 1
    assert (st.state, st.error) == (ERROR, index)
    assert apply(st, "/barforge/accepted", "job-2") == 1 and st.error == 0  # a new job clears it


def test_other_and_malformed_datagrams_change_nothing(apply):
    st = Status(IDLE, 0.0, 0)
    assert apply(st, "/barforge/pong", 1, "0.1") == 0
    assert apply(st, "/barforge/progress", "job") == 0  # no fraction
    assert (st.state, st.progress, st.error) == (IDLE, 0.0, 0)
