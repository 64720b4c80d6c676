"""The real-time bridge: ``barforge serve`` (OSC over UDP + shared-memory clips).

docs/PROTOCOL.md is the contract. Modules: osc_wire (strict OSC decoding), osc_protocol
(datagrams <-> requests), server (UDP, request handling), jobs (queue + worker), generator (the
model in a child process), generation (driving the model), clip_render (resample, cut, loop
seam, loudness), continuation (live timing), renderer (one job end to end), persistence (WAV +
sidecar), presets, command (the CLI). Bars -> frames is the engine's (engine/tempo.py), shared
with the CLI and the Python API.
"""
