"""A session against a running server: generate a loop, play it on the bar grid, then ask
for its live continuation from what was played (the capture ring), offline or live."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from plugin_host.host.osc_client import Done, OscClient
from plugin_host.host.playback import BlockRenderer, SoundDevicePlayer
from plugin_host.host.timeline import Timeline
from plugin_host.host.transport import Transport
from plugin_host.shm import Clip, HostSegment


@dataclass
class SessionPlan:
    prompt: str
    loop_bars: int          # bars of the generated loop
    total_bars: int         # length of the session
    continue_at_bar: int    # ask for a continuation once this bar is played (0: never)
    continue_bars: int
    options: dict = field(default_factory=dict)
    timeout_s: float = 600.0


def fetch_clip(segment: HostSegment, done: Done) -> Clip:
    """The clip that /barforge/done announced, read from its slot."""
    clip = segment.read_slot(done.slot)
    if clip is None or clip.job_id != done.job:
        raise RuntimeError(f"slot {done.slot} no longer holds job {done.job!r} (reused by a newer clip)")
    return clip


def _job(tag: str) -> str:
    return f"host-{os.getpid()}-{tag}-{time.monotonic_ns() % 10**9}"


def start_session(client: OscClient, transport: Transport, plan: SessionPlan) -> None:
    client.wait_pong()
    client.transport(float(transport.bpm), transport.beats_per_bar, transport.sample_rate)
    client.wait_ack("transport")
    client.capture(transport.sample_rate)
    client.wait_ack("capture")


def _progress(label: str):
    def show(fraction: float) -> None:
        print(f"\r{label}: {fraction:5.0%}", end="", flush=True)
    return show


def run_offline(client: OscClient, segment: HostSegment, transport: Transport,
                plan: SessionPlan, verbose: bool = False) -> tuple[np.ndarray, Timeline]:
    """Render the session without an audio device. The render waits (it is not real time)
    while the server works, so every clip lands where the protocol says: the loop on bar 0,
    the continuation on its start_beat."""
    start_session(client, transport, plan)
    timeline = Timeline(transport)
    renderer = BlockRenderer(timeline, segment)
    job = _job("gen")
    client.generate(job, plan.prompt, plan.loop_bars, **plan.options)
    done = client.wait_done(job, plan.timeout_s, _progress(job) if verbose else None)
    timeline.place_at_bar(fetch_clip(segment, done), 0)
    end = transport.bar_frame(plan.total_bars)
    parts = []
    if 0 < plan.continue_at_bar < plan.total_bars:
        parts.append(renderer.render_until(transport.bar_frame(plan.continue_at_bar)))
        job = _job("cont")
        client.continue_(job, plan.continue_bars, **plan.options)
        done = client.wait_done(job, plan.timeout_s, _progress(job) if verbose else None)
        clip = fetch_clip(segment, done)
        start = transport.frame_at_beat(done.start_beat)
        timeline.place(clip, max(start, renderer.position), origin_frame=start)
    parts.append(renderer.render_until(end))
    return np.concatenate(parts), timeline


def run_live(client: OscClient, segment: HostSegment, transport: Transport, plan: SessionPlan,
             device=None, blocksize: int = 512) -> SoundDevicePlayer:
    """Play the session through sounddevice: the loop starts on the next bar line after it
    arrives; the continuation is asked for once continue_at_bar was played and joins at its
    start_beat (from the matching offset if it arrives late). Returns when total_bars were
    played."""
    start_session(client, transport, plan)
    timeline = Timeline(transport)
    renderer = BlockRenderer(timeline, segment)
    player = SoundDevicePlayer(renderer, device, blocksize)
    player.start()
    try:
        job = _job("gen")
        client.generate(job, plan.prompt, plan.loop_bars, **plan.options)
        clip = fetch_clip(segment, client.wait_done(job, plan.timeout_s))
        next_bar = transport.bar_at_frame(renderer.position) + 1
        timeline.place_at_bar(clip, next_bar)
        end = transport.bar_frame(plan.total_bars + next_bar)
        if plan.continue_at_bar > 0:
            while renderer.position < transport.bar_frame(next_bar + plan.continue_at_bar):
                time.sleep(0.01)
            job = _job("cont")
            client.continue_(job, plan.continue_bars, **plan.options)
            done = client.wait_done(job, plan.timeout_s)
            start = transport.frame_at_beat(done.start_beat)
            timeline.place(fetch_clip(segment, done), max(start, renderer.position + blocksize),
                           origin_frame=start)
        while renderer.position < end:
            time.sleep(0.01)
    finally:
        player.stop()
    return player
