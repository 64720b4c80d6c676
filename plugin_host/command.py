"""``barforge host`` (the reference host) and ``barforge build-plugin`` (the player's bundles)."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

LV2_DIR = Path(__file__).resolve().parent / "lv2"
DPF_DIR = Path(__file__).resolve().parent / "dpf"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``host`` and ``build-plugin`` subcommands."""
    p = sub.add_parser("host", help="reference host: play generated loops on the bar grid",
                       description="Talk to a running `barforge serve`: send the transport, generate "
                                   "a loop, play it on bar lines (sounddevice, or --offline to a WAV), "
                                   "write the output into the capture ring and ask for its continuation.")
    p.add_argument("--host", default="127.0.0.1", help="server address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=9000, help="server UDP port (default: 9000)")
    p.add_argument("--shm-name", default="barforge", help="shared-memory segment (default: barforge)")
    p.add_argument("--bpm", type=float, default=120.0, help="session tempo (default: 120)")
    p.add_argument("--beats-per-bar", type=int, default=4, help="meter numerator (default: 4)")
    p.add_argument("--sample-rate", type=int, default=48000, help="session rate in Hz (default: 48000)")
    p.add_argument("--prompt", default="four-on-the-floor house beat with deep bass",
                   help="what to generate")
    p.add_argument("--loop-bars", type=int, default=4, help="bars of the generated loop (default: 4)")
    p.add_argument("--bars", type=int, default=8, help="bars of the session (default: 8)")
    p.add_argument("--continue-at", type=int, default=None,
                   help="ask for the live continuation after this many bars (default: --loop-bars; "
                        "0: never)")
    p.add_argument("--continue-bars", type=int, default=None,
                   help="bars of the continuation (default: --loop-bars)")
    p.add_argument("--seed", type=int, default=None, help="generation seed option")
    p.add_argument("--offline", metavar="OUT.wav", default=None,
                   help="render the session to this WAV instead of playing it")
    p.add_argument("--device", default=None, help="sounddevice output device (name or index)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each clip")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds to wait for the server to answer a ping (default: 10)")
    p.set_defaults(func=host)

    b = sub.add_parser("build-plugin", help="build the Barforge Player: LV2, VST3 and CLAP bundles (DPF, "
                                            "make -C plugin_host/dpf) and the hand-written LV2 bundle")
    b.add_argument("--out", default=str(DPF_DIR / "build"),
                   help="folder that receives BarforgePlayer.lv2/, .vst3/, .clap and barforge_player.lv2/ "
                        "(default: plugin_host/dpf/build)")
    b.add_argument("--no-dpf", action="store_true",
                   help="only the hand-written LV2 bundle (needs lv2-dev, not dpf-source)")
    b.set_defaults(func=build_plugin)


def host(args: argparse.Namespace) -> int:
    from plugin_host.host.osc_client import OscClient
    from plugin_host.host.session import SessionPlan, run_live, run_offline
    from plugin_host.host.transport import Transport
    from plugin_host.shm import HostSegment

    transport = Transport.create(args.bpm, args.beats_per_bar, args.sample_rate)
    if not 1 <= args.loop_bars <= 64 or args.bars < 1:
        raise ValueError(f"--loop-bars {args.loop_bars} / --bars {args.bars}: expected 1..64 / >= 1")
    plan = SessionPlan(args.prompt, args.loop_bars, args.bars,
                       args.loop_bars if args.continue_at is None else args.continue_at,
                       args.continue_bars or args.loop_bars,
                       {} if args.seed is None else {"seed": args.seed}, args.timeout)
    client = OscClient(args.port, args.host)
    try:
        client.wait_pong(timeout=args.connect_timeout)  # the server creates the segment before serving
        segment = HostSegment.attach(args.shm_name)
        try:
            if args.offline:
                import soundfile as sf

                audio, _ = run_offline(client, segment, transport, plan, verbose=True)
                sf.write(args.offline, audio, transport.sample_rate, subtype="FLOAT")
                print(f"\nwrote {args.offline}: {args.bars} bars, {len(audio)} frames at "
                      f"{transport.sample_rate} Hz")
            else:
                player = run_live(client, segment, transport, plan, device=args.device)
                print(f"played {player.blocks} blocks, {player.underflows} underflows")
        finally:
            segment.close()
    finally:
        client.close()
    return 0


def build_plugin(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    subprocess.run(["make", "-C", str(LV2_DIR), f"OUT={out}"], check=True)
    built = ["barforge_player.lv2"]
    if not args.no_dpf:
        subprocess.run(["make", "-C", str(DPF_DIR), f"OUT={out}"], check=True)
        built += ["BarforgePlayer.lv2", "BarforgePlayer.vst3", "BarforgePlayer.clap"]
    print(f"built {', '.join(built)} in {out}; LV2_PATH={out} (LV2), a VST3 / CLAP path at it for the others")
    return 0
