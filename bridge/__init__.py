"""The real-time bridge: ``barforge serve`` (OSC over UDP + shared-memory clips).

docs/PROTOCOL.md is the contract. Modules: osc_wire (strict OSC decoding), osc_protocol
(datagrams <-> requests), server (UDP, request handling), jobs (queue + worker), tempo (bars
-> frames), generation (driving the model), clip_render (resample, cut, loop seam,
loudness), continuation (live timing), renderer (one job end to end), persistence (WAV +
sidecar), presets, command (the CLI).
"""
from bridge.tempo import frames_for_bars

__all__ = ["frames_for_bars"]
