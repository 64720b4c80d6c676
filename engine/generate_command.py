"""``barforge generate`` (text -> WAV, N bars at a BPM or S seconds) and ``barforge continue``.

Bars are exact: the length is engine/tempo.py's ``Tempo.frames`` (rational arithmetic, bpm
rounded to a thousandth, as docs/PROTOCOL.md), the model is asked for the codec frames that
cover it after resampling (``duration_for``), and the output is cut to exactly that many frames.
Sampling flags go through engine/decoding/options.py, which honours or refuses each in the mode.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # numpy and torch load when a command runs, so --help and bad arguments are quick
    import numpy as np
    import torch

from engine.config_dict import MAX_DURATION_S
from engine.decoding.options import MODES, api_params
from engine.tempo import (BARS_RANGE, BEATS_PER_BAR_RANGE, SAMPLE_RATE_RANGE, Tempo, check_bpm,
                          check_integer, duration_for)

SAMPLING_FLAGS = ("mode", "seed", "temperature", "top_k", "top_p", "cfg", "steps")
MAX_DEFAULT_PROMPT_S = 10.0   # continue's prompt when --prompt-seconds is not given, if the model takes it


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default="default",
                   help="'default', 'debug', 'debug-magnet', 'debug-melody', or a checkpoint "
                        "folder (native, Hugging Face, audiocraft, ONNX bundle); "
                        "default: %(default)s")
    p.add_argument("--provider", default=None,
                   help="onnxruntime execution provider for an ONNX bundle: cpu, cuda (or "
                        "CPUExecutionProvider, CUDAExecutionProvider); default: CUDA when it "
                        "works, else CPU. An error for PyTorch models.")
    p.add_argument("-o", "--output", required=True, type=Path, help="WAV file to write")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="decoding: ar (MusicGen), magnet or hybrid (MAGNeT models); "
                        "default: the model's first mode")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None,
                   help="nucleus sampling mass (> 0 overrides --top-k)")
    p.add_argument("--cfg", type=float, default=None,
                   help="classifier-free guidance coefficient of the mode (MAGNeT: the guidance "
                        "its anneal starts from, ending at 1)")
    p.add_argument("--steps", type=_steps, default=None,
                   help="MAGNeT decoding steps per codebook, e.g. 20,10,10,10 (magnet and "
                        "hybrid modes)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="sample rate of the WAV (default: the model's; for continue, the "
                        "input's)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``generate`` and ``continue`` subcommands."""
    gen = sub.add_parser("generate", help="generate music from a text prompt into a WAV file",
                         description=__doc__.splitlines()[0])
    gen.add_argument("prompt", help="text description, e.g. 'dusty boom-bap drums, vinyl crackle'")
    length = gen.add_mutually_exclusive_group(required=True)
    length.add_argument("--duration", type=float, help="seconds of audio")
    length.add_argument("--bars", type=int, help="number of bars (needs --bpm)")
    gen.add_argument("--bpm", type=float, help="tempo in beats per minute (with --bars); "
                                              "'bpm: N' is added to the prompt")
    gen.add_argument("--beats-per-bar", type=int, default=4, help="meter numerator (default 4)")
    gen.add_argument("--key", default=None, help="musical key, e.g. 'C minor' or 'F# major'; "
                                                "'key: c minor' is added to the prompt")
    _add_sampling_options(gen)
    gen.set_defaults(func=run_generate)

    cont = sub.add_parser("continue", help="continue a WAV file with generated music",
                          description="Continue the end of a WAV file; the output holds the "
                                      "prompt part (as the model re-renders it) then the new "
                                      "audio.")
    cont.add_argument("input", type=Path, help="WAV (or any soundfile-readable) file to continue")
    cont.add_argument("prompt", nargs="?", default="", help="text description (optional)")
    cont.add_argument("--duration", type=float, required=True, help="seconds of new audio")
    cont.add_argument("--prompt-seconds", type=float, default=None,
                      help="seconds from the end of the input used as the prompt (default: as "
                           f"much as the model takes, half its segment, at most "
                           f"{MAX_DEFAULT_PROMPT_S:g})")
    _add_sampling_options(cont)
    cont.set_defaults(func=run_continue)


def _load(args: argparse.Namespace) -> Any:
    from engine.api import load_model
    return load_model(args.model, provider=args.provider)


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as "
                                         f"20,10,10,10, got {text!r}") from None


def _set_params(model: Any, args: argparse.Namespace, samples: int, sample_rate: int,
                min_frames: int = 0) -> None:
    """The sampling flags (engine/decoding/options.py) and the duration that covers
    ``samples`` at ``sample_rate``."""
    params = api_params({flag: getattr(args, flag) for flag in SAMPLING_FLAGS})
    model.set_generation_params(**params)   # refuses a flag the mode does not take
    model.set_generation_params(duration=duration_for(samples, sample_rate, model, min_frames),
                                **params)


def _resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """[N, C] float32 at ``from_rate`` -> ``to_rate`` (soxr)."""
    if from_rate == to_rate:
        return wav
    import numpy as np
    import soxr
    out = soxr.resample(wav, from_rate, to_rate)
    return out.reshape(out.shape[0], -1).astype(np.float32, copy=False)


def write_wav(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    """Write [N, C] float32 atomically (a temporary file renamed over ``path``)."""
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, wav, sample_rate, subtype="FLOAT", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_numpy(wav: torch.Tensor) -> np.ndarray:
    return wav[0].detach().float().cpu().numpy().T.copy()  # [C, N] -> [N, C]


def run_generate(args: argparse.Namespace) -> int:
    from engine.conditioners.caption import describe
    from engine.conditioners.key import key_index

    if args.sample_rate is not None:
        check_integer("--sample-rate", args.sample_rate, SAMPLE_RATE_RANGE)
    description, tempo = args.prompt, None
    if args.key is not None:
        parts = args.key.split()
        if len(parts) != 2:
            raise ValueError(f"--key must be a tonic and a mode such as 'C minor', got {args.key!r}")
        key_index(*parts)      # names a bad tonic or mode
    if args.bars is not None:
        if args.bpm is None:
            raise ValueError("--bars needs --bpm")
        check_integer("--bars", args.bars, BARS_RANGE)
        check_integer("--beats-per-bar", args.beats_per_bar, BEATS_PER_BAR_RANGE)
        tempo = Tempo(check_bpm(args.bpm, "--bpm"), args.beats_per_bar)
    else:
        if args.bpm is not None:
            raise ValueError("--bpm goes with --bars (use one of --duration or --bars/--bpm)")
        _in_range("--duration", args.duration, 0.02, MAX_DURATION_S)
    if tempo is not None or args.key is not None:
        description = describe(args.prompt, bpm=None if tempo is None else tempo.caption_bpm,
                               key=args.key)
    model = _load(args)
    out_rate = args.sample_rate or model.sample_rate
    exact = tempo.frames(args.bars, out_rate) if tempo else round(args.duration * out_rate)
    _set_params(model, args, exact, out_rate)
    wav = _to_numpy(model.generate([description], progress=True, tempo=tempo))
    wav = _resample(wav, model.sample_rate, out_rate)
    write_wav(args.output, wav[:exact], out_rate)
    print(f"wrote {args.output}: {exact} frames ({exact / out_rate:.3f} s) at {out_rate} Hz, "
          f"{wav.shape[1]} channel(s); prompt: {description!r}; model: {model.name}")
    return 0


def run_continue(args: argparse.Namespace) -> int:
    _in_range("--duration", args.duration, 0.02, MAX_DURATION_S)
    if not args.input.is_file():
        raise FileNotFoundError(f"input audio not found: {args.input}")
    import numpy as np
    import soundfile as sf
    import torch

    try:
        audio, in_rate = sf.read(str(args.input), dtype="float32", always_2d=True)  # [N, C]
    except RuntimeError as e:
        raise ValueError(f"{args.input}: not a readable audio file ({e})") from e
    if audio.shape[0] == 0:
        raise ValueError(f"{args.input} holds no audio")
    model = _load(args)
    out_rate = args.sample_rate or in_rate
    check_integer("--sample-rate", int(out_rate), SAMPLE_RATE_RANGE)
    max_prompt = model.max_duration / 2
    prompt_seconds = args.prompt_seconds
    if prompt_seconds is None:
        prompt_seconds = min(MAX_DEFAULT_PROMPT_S, max_prompt)
    _in_range("--prompt-seconds", prompt_seconds, 0.02, max_prompt)
    prompt = audio[-int(round(prompt_seconds * in_rate)):]
    prompt_s = prompt.shape[0] / in_rate
    exact = round((prompt_s + args.duration) * out_rate)
    # the prompt's codec frames (rounded up) and at least one new one
    prompt_frames = int(np.ceil(prompt_s * model.frame_rate))
    _set_params(model, args, exact, out_rate, min_frames=prompt_frames + 1)
    tensor = torch.from_numpy(np.ascontiguousarray(prompt.T))[None]  # [1, C, N]
    wav = _to_numpy(model.generate_continuation(tensor, int(in_rate),
                                                [args.prompt] if args.prompt else None,
                                                progress=True))
    wav = _resample(wav, model.sample_rate, out_rate)
    write_wav(args.output, wav[:exact], out_rate)
    print(f"wrote {args.output}: {exact} frames at {out_rate} Hz "
          f"({prompt_s:.3f} s of prompt + {args.duration:.3f} s new); model: {model.name}")
    return 0
