"""``barforge data synth``: render the procedural loop corpus to MIDI + 32 kHz mono WAV + JSON.

``--music21`` sets the share of items that are Bach chorale excerpts from music21's bundled
corpus (real voice leading; needs the ``recipes`` extra), the rest composed procedurally.

Needs FluidSynth and a General MIDI soundfont: ``apt-get install fluidsynth fluid-soundfont-gm``
(Debian/Ubuntu). Output folder layout: ``loop_000000.{mid,wav,json}`` per item and
``index.jsonl`` (one sidecar per line) + ``corpus.json`` (seed, sample rate, totals).
"""
from __future__ import annotations

import argparse
import os


def _run_synth(args: argparse.Namespace) -> int:
    from engine.recipes.data.corpus import synth_corpus

    items = synth_corpus(args.out, args.hours, args.seed, args.soundfont, args.jobs, not args.quiet,
                         args.music21)
    print(f"wrote {len(items)} loops ({sum(s['duration_s'] for s in items) / 60:.1f} min) to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` with its subcommand ``synth``."""
    p = sub.add_parser("data", help="make training data", description=__doc__.splitlines()[0])
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    s = data_sub.add_parser("synth", help="procedural loop corpus rendered with FluidSynth",
                            description=__doc__)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--hours", type=float, default=1.0, help="hours of audio to render (default 1)")
    s.add_argument("--seed", type=int, default=0, help="corpus seed: same seed, same corpus")
    s.add_argument("--soundfont", default=None, help="a General MIDI .sf2 (default: FluidR3_GM)")
    s.add_argument("--music21", type=float, default=0.2, metavar="SHARE",
                   help="share of items that are Bach chorale excerpts from music21's corpus "
                        "(default 0.2; 0: procedural loops only, as corpora made before it)")
    s.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel fluidsynth renders")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_run_synth)
