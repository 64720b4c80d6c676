"""Issue 15: the bridge never lies, never goes deaf, never loses a reply.

In-process tests drive a real Bridge (debug model, real segment and render dir, real UDP
sockets) datagram by datagram; the shutdown and second-server tests run ``barforge serve``
as a subprocess, as a host finds it.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pythonosc.osc_message import OscMessage

from plugin_host.shm import HostSegment  # noqa: E402

from bridge.server import RECEIVE_BUFFER_BYTES, OSCServer  # noqa: E402
from bridge_inproc import InProcess, dgram  # noqa: E402
from bridge_server import ROOT, free_port, spawn_server, terminate_server  # noqa: E402

FINALS = ("/barforge/done", "/barforge/error")


@pytest.fixture(scope="module")
def inproc(tmp_path_factory):
    b = InProcess(tmp_path_factory.mktemp("renders"))
    b.bridge.jobs.start()
    yield b
    b.close()


def held(obj, name, reached, release):
    """obj.name still runs for real, but waits for ``release`` first (and says so)."""
    real = getattr(obj, name)

    def wrapper(*args, **kwargs):
        reached.set()
        release.wait(60)
        return real(*args, **kwargs)

    setattr(obj, name, wrapper)
    return real


def cancel_at(inproc, obj, name, job):
    """Generate ``job``, cancel it while obj.name is under way; every reply until its final."""
    reached, release = threading.Event(), threading.Event()
    real = held(obj, name, reached, release)
    try:
        inproc.handle(dgram("/barforge/transport", 120.0, 4, 48000))
        inproc.handle(dgram("/barforge/generate", job, "x", 1))
        assert reached.wait(120), f"the job never reached {name}"
        inproc.handle(dgram("/barforge/cancel", job))
        release.set()
        return inproc.until_final(job)
    finally:
        setattr(obj, name, real)


def test_cancel_while_the_wav_is_written_ends_in_cancelled_only(inproc):
    before = set(inproc.store.dir.iterdir())
    replies = cancel_at(inproc, inproc.store, "save", "w1")
    finals = [(a, p[:2]) for a, p in replies if a in FINALS and p[0] == "w1"]
    assert finals == [("/barforge/error", ["w1", "cancelled"])], replies
    assert ("/barforge/cancelled", ["w1"]) in replies
    assert set(inproc.store.dir.iterdir()) == before  # the cancelled clip's files are gone


def test_cancel_while_the_clip_is_published_is_answered_after_done(inproc):
    replies = cancel_at(inproc, inproc.segment, "publish", "w3")
    about = [(a, p) for a, p in replies if a in FINALS + ("/barforge/cancelled",) and p[0] == "w3"]
    assert [a for a, _ in about] == ["/barforge/done", "/barforge/error"], replies
    assert about[1][1][1] == "unknown_job" and "finished" in about[1][1][2]


def test_cancel_before_the_commit_still_cancels(inproc):
    inproc.handle(dgram("/barforge/transport", 120.0, 4, 48000))
    inproc.handle(dgram("/barforge/generate", "w2", "x", 16))
    end = time.monotonic() + 60
    seen = []
    while not any(a == "/barforge/progress" for a, _ in seen) and time.monotonic() < end:
        seen += inproc.drain()
        time.sleep(0.01)
    inproc.handle(dgram("/barforge/cancel", "w2"))
    replies = seen + inproc.until_final("w2")
    finals = [(a, p[:2]) for a, p in replies if a in FINALS and p[0] == "w2"]
    assert finals == [("/barforge/error", ["w2", "cancelled"])] and ("/barforge/cancelled", ["w2"]) in replies


def test_ipv6_loopback_host_is_served(inproc):
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = OSCServer("::1", 0)
    old_sock = inproc.bridge.sock
    try:
        server.serve_in_thread(inproc.bridge)
        client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        client.settimeout(10)
        client.sendto(dgram("/barforge/ping"), server.server_address[:2])
        m = OscMessage(client.recvfrom(65536)[0])
        assert (m.address, m.params[0]) == ("/barforge/pong", 1)
        client.close()
    finally:
        server.shutdown()
        server.server_close()
        inproc.bridge.sock = old_sock


def test_bad_host_is_one_line_naming_it():
    with pytest.raises(ValueError, match="--host 'no such host!'"):
        OSCServer("no such host!", 0)


def test_a_burst_waits_in_the_receive_buffer_instead_of_vanishing(inproc):
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    if rmem_max < RECEIVE_BUFFER_BYTES:
        pytest.skip(f"net.core.rmem_max {rmem_max} caps the buffer below {RECEIVE_BUFFER_BYTES}")
    server = OSCServer("127.0.0.1", 0)
    old_sock = inproc.bridge.sock
    burst = 3000
    try:
        assert server.receive_buffer_bytes >= RECEIVE_BUFFER_BYTES
        for i in range(burst):  # nobody reads yet: all of it must fit the kernel's buffer
            inproc.client.sendto(dgram("/barforge/ping"), server.server_address)
        server.serve_in_thread(inproc.bridge)
        got, end = 0, time.monotonic() + 60
        while got < burst and time.monotonic() < end:
            got += sum(a == "/barforge/pong" for a, _ in inproc.drain())
            time.sleep(0.01)
        assert got == burst
    finally:
        server.shutdown()
        server.server_close()
        inproc.bridge.sock = old_sock


# ---- subprocess servers: shutdown, a second server on the same segment -----------------------

class Client:
    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = port

    def send(self, address, *args):
        self.sock.sendto(dgram(address, *args), ("127.0.0.1", self.port))

    def collect(self, until, timeout):
        seen, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                m = OscMessage(self.sock.recv(65536))
            except socket.timeout:
                continue
            seen.append((m.address, list(m.params)))
            if until(seen):
                break
        return seen

    def wait_ping(self, proc, timeout=180):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert proc.poll() is None, Path(proc.log.name).read_text()[-2000:]
            self.send("/barforge/ping")
            if any(a == "/barforge/pong" for a, _ in self.collect(lambda s: True, 1.0)):
                return
        raise TimeoutError("server never answered ping")


def test_sigterm_answers_the_running_and_queued_jobs_first(tmp_path):
    shm, port = f"bfterm{os.getpid()}", free_port()
    proc = spawn_server(port, shm, tmp_path / "r", tmp_path / "log", 40, "--queue-size", "4",
                        "--no-warm-up")
    c = Client(port)
    try:
        c.wait_ping(proc)
        c.send("/barforge/transport", 120.0, 4, 48000)
        c.send("/barforge/generate", "t0", "x", 16)
        seen = c.collect(lambda s: any(a == "/barforge/progress" for a, _ in s), 60)
        for j in ("t1", "t2"):
            c.send("/barforge/generate", j, "x", 16)
        seen += c.collect(lambda s: sum(a == "/barforge/accepted" for a, _ in s) == 2, 10)
        proc.send_signal(signal.SIGTERM)
        seen += c.collect(lambda s: sum(a in FINALS for a, _ in s) == 3, 30)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.log.close()
    finals = sorted((p[0], p[1]) for a, p in seen if a == "/barforge/error")
    assert finals == [("t0", "shutting_down"), ("t1", "shutting_down"), ("t2", "shutting_down")], seen
    assert not any(a == "/barforge/done" for a, _ in seen)
    assert not os.path.exists(f"/dev/shm/{shm}")


def test_a_second_server_never_takes_a_live_segment(tmp_path):
    shm, port = f"bftwo{os.getpid()}", free_port()
    proc = spawn_server(port, shm, tmp_path / "r", tmp_path / "log", 40, "--no-warm-up")
    c = Client(port)
    try:
        c.wait_ping(proc)
        host = HostSegment.attach(shm)
        base = [sys.executable, "-m", "bridge", "serve", "--model", "debug", "--shm-name", shm,
                "--render-dir", str(tmp_path / "r2"), "--no-warm-up"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        same_port = subprocess.run(base + ["--port", str(port)], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=300)
        assert same_port.returncode == 2 and "Traceback" not in same_port.stderr
        assert f"port {port}" in same_port.stderr.strip().splitlines()[-1]
        assert host.same_segment(), "the segment was removed by a server that could not listen"
        other_port = subprocess.run(base + ["--port", str(free_port())], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=300)
        last = other_port.stderr.strip().splitlines()[-1]
        assert other_port.returncode == 2 and "Traceback" not in other_port.stderr
        assert f"--shm-name {shm}" in last and "running server" in last, last
        assert host.same_segment(), "a second server replaced the live segment"
        assert host.server_pid() == proc.pid
        c.send("/barforge/ping")
        assert any(a == "/barforge/pong" for a, _ in c.collect(lambda s: True, 10))
        host.close()
    finally:
        terminate_server(proc)
