"""The DPF Barforge Player's UI (DGL/NanoVG) in its JACK standalone under Xvfb, with jackd's
dummy driver: a prompt typed into the UI and a click on Generate must reach the server as
exactly that prompt; the server's replies must show (progress). With BARFORGE_UI_SCREENSHOT
set to a path, the test saves a screenshot of the UI there (docs/plugin_ui.png was made so)."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from plugin_host.shm import ServerSegment

osc_message = pytest.importorskip("pythonosc.osc_message")
osc_builder = pytest.importorskip("pythonosc.osc_message_builder")
TOOLS = ("Xvfb", "jackd", "jack_wait", "xdotool")
pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS),
                                reason="needs xvfb, jackd2 and xdotool: apt-get install xvfb "
                                       "jackd2 xdotool")
PROMPT = "deep house, rhodes & 909 at dusk"


@pytest.fixture
def display():
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "800x600x24",
                             "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    yield f":{number}"
    xvfb.terminate()
    xvfb.wait()


@pytest.fixture
def jack_server():
    name = f"bfui{os.getpid()}"
    jackd = subprocess.Popen(["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", "48000",
                              "-p", "1024"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    subprocess.run(["jack_wait", "-w", "-t", "10"], env=env, check=True, capture_output=True)
    yield name
    jackd.terminate()
    jackd.wait()


def xdotool(env, *args) -> str:
    return subprocess.run(["xdotool", *args], env=env, check=True, capture_output=True,
                          text=True, timeout=30).stdout


def test_a_typed_prompt_and_a_click_on_generate_reach_the_server(dpf_bundles, display,
                                                                  jack_server, tmp_path):
    seg = ServerSegment.create(f"bfui{os.getpid()}", 4, 200000, 2, 9000 * 4)
    seg.publish(np.zeros((96000, 2), np.float32), sample_rate=48000, bars=1, bpm=120.0,
                beats_per_bar=4, start_beat=-1, flags=1, job_id="silence")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    env = dict(os.environ, DISPLAY=display, JACK_DEFAULT_SERVER=jack_server,
               BARFORGE_SHM_NAME=seg.name, BARFORGE_OSC_PORT=str(server.getsockname()[1]))
    player = subprocess.Popen([str(dpf_bundles / "BarforgePlayer")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        window = xdotool(env, "search", "--sync", "--name", "^Barforge Player$").split()[0]
        time.sleep(1.0)  # (the first frames)
        xdotool(env, "mousemove", "--window", window, "100", "60", "click", "1")  # prompt field
        xdotool(env, "type", "--delay", "15", PROMPT)
        time.sleep(0.3)
        xdotool(env, "mousemove", "--window", window, "250", "108", "click", "1")  # Generate
        generate, deadline = [], time.monotonic() + 5.0
        while not generate and time.monotonic() < deadline:
            try:
                data, sender = server.recvfrom(4096)
            except socket.timeout:
                continue
            msg = osc_message.OscMessage(data)
            if msg.address == "/barforge/generate":
                generate.append(msg)
        assert len(generate) == 1, "no /barforge/generate from the click"
        job, prompt, bars = generate[0].params
        assert prompt == PROMPT and bars == 4
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", job)
        for address, args in (("/barforge/accepted", [job]), ("/barforge/progress", [job, 0.42])):
            b = osc_builder.OscMessageBuilder(address=address)
            for a in args:
                b.add_arg(a)
            server.sendto(b.build().dgram, sender)
        time.sleep(1.0)  # (the reply, the next block, the UI's idle)
        shot = os.environ.get("BARFORGE_UI_SCREENSHOT")
        if shot and shutil.which("import"):
            subprocess.run(["import", "-window", window, shot], env=env, check=True)
        assert player.poll() is None, "the standalone player died"
    finally:
        player.terminate()
        player.wait(timeout=10)
        server.close()
        seg.close()
