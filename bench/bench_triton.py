"""Generation through Triton Inference Server vs the local bridge alone (issue 21).

    PYTHONPATH=. python3 bench/bench_triton.py [--models debug default] [--clients 1 4 16]
        [--clips 2] [--instances 1] [--batching on off] [--max-batch 8] [--loop-batches 4 8]

For each model: exports its bundle with the Triton repository (``barforge export --triton``),
starts tritonserver (the venv of tests/triton_env.py) and, for each client count N, N clients
at once each ask for ``--clips`` 4-bar loops (120 BPM, 4/4, 48 kHz, a seed of their own) and
wait for each:

- ``triton``: each client a gRPC stream to the server's ``barforge`` model (what N bridges
  beside N DAWs send it; bridge/triton_engine.py's client);
- ``bridge+triton``: OSC clients of one ``barforge serve --engine triton://`` bridge;
- ``local bridge``: OSC clients of one ``barforge serve --model M`` (no Triton).

The two Triton paths run once per ``--batching`` setting, on a server restarted with the
generation model's config rewritten: ``on`` lets one instance take up to ``--max-batch``
queued requests at once and decode those that can share a loop together (the clients' requests
all can: same prompt, length and tempo, their own seeds); ``off`` is ``max_batch_size`` 1.

``--loop-batches N ...`` adds, per model, the decoding loop alone without a server: N
requests through one ``generate_batch`` against the same N one after another
(``generate_samples``), alternated ``--clips`` times in one process on the bundle, so load
drift hits both alike: what batching can gain before gRPC and queueing.

Reports clips/s over the run and p50 / p99 latency (request to clip) per clip. Appends to
bench/RESULTS_triton.md with the load average before and after: on a shared machine the
numbers are indicative only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from _common import append_results, load_line  # noqa: E402
from bridge_server import Host, free_port, start_server, stop_server  # noqa: E402
import triton_env  # noqa: E402

BARS, BPM, METER, RATE = 4, 120, 4, 48000
OUT = HERE / "RESULTS_triton.md"


def run_clients(n: int, clips: int, ask) -> tuple[float, list[float]]:
    """``n`` threads each calling ``ask(client, clip)`` ``clips`` times: (wall s, latencies)."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for k in range(clips):
                t0 = time.monotonic()
                ask(i, k)
                with lock:
                    latencies.append(time.monotonic() - t0)
        except BaseException as e:  # noqa: BLE001 - reported after the join
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.monotonic() - t0, latencies


def triton_asker(address: str):
    from bridge.triton_engine import TritonClient
    from engine.sample_generation import SampleRequest
    from engine.tempo import Tempo

    tempo = Tempo(BPM, METER)
    samples = tempo.frames(BARS, RATE)

    def ask(i: int, k: int) -> None:
        request = SampleRequest("four-on-the-floor house beat, bpm: 120",
                                {"mode": "ar", "seed": 1000 * i + k}, samples, RATE, tempo)
        TritonClient(address).generate(request, lambda fraction: None)

    return ask


def osc_asker(port: int, n: int):
    """Clients of the bridge on ``port``: client i uses host i (its own UDP socket)."""
    hosts = [Host(port) for _ in range(n)]
    hosts[0].send("/barforge/transport", float(BPM), METER, RATE)
    hosts[0].one("/barforge/ack")

    def ask(i: int, k: int) -> None:
        # the bridge queues at most 8 jobs and answers `busy` beyond that (PROTOCOL.md): a
        # client asks again, as a host would; the clip's latency counts from the first ask
        for attempt in range(10_000):
            job = f"b{i}-{k}-{attempt}"
            hosts[i].send("/barforge/generate", job, "four-on-the-floor house beat", BARS,
                          "seed", 1000 * i + k)
            address, params = hosts[i].job_replies(job, 600)[-1]
            if address == "/barforge/done":
                return
            if address != "/barforge/error" or params[1] != "busy":
                raise RuntimeError(f"{job}: {params}")
            time.sleep(0.05)
        raise RuntimeError(f"b{i}-{k}: busy 10000 times")

    return ask


def line(label: str, n: int, wall: float, latencies: list[float]) -> str:
    p50, p99 = np.percentile(latencies, [50, 99])
    return (f"| {label} | {n} | {len(latencies)} | {len(latencies) / wall:.2f} | "
            f"{p50:.2f} | {p99:.2f} |\n")


def export(model_name: str, root: Path, instances: int) -> Path:
    from engine.api import build_debug_model, load_model
    from export.bundle import export_bundle
    model = build_debug_model() if model_name == "debug" else load_model(model_name)
    export_bundle(model, root / "bundle", triton_dir=root / "repo", triton_instances=instances,
                  log=lambda s: None)
    return root / "repo"


def bridge_rows(label: str, root: Path, clients: list[int], clips: int, *extra: str) -> list[str]:
    """The rows of ``label``: a ``barforge serve`` with ``extra`` arguments, per client count."""
    rows = []
    for n in clients:
        shm, port = f"bfbench{os.getpid()}{n}", free_port()
        render = root / f"render-{label}-{n}".replace(" ", "_")
        render.mkdir()
        proc, _ = start_server(shm, render, port, *extra, model=None, max_seconds=60,
                               timeout=600)
        try:
            ask = osc_asker(port, n)
            ask(0, clips)  # waits out the bridge's warm-up and one-off set-up
            rows.append(line(label, n, *run_clients(n, clips, ask)))
        finally:
            stop_server(proc, shm)
    return rows


def triton_rows(env, root: Path, repo: Path, args: argparse.Namespace, batching: str) -> list[str]:
    """The two Triton paths' rows with the generation model's batching ``on`` or ``off``."""
    from export.triton_model import write_generation_model
    write_generation_model(root / "bundle", repo, args.instances,
                           max_batch=args.max_batch if batching == "on" else 1)
    server = triton_env.TritonServer(env, repo, root / f"tritonserver-{batching}.log")
    server.start()
    try:
        ask = triton_asker(server.url.removeprefix("triton://"))
        ask(0, 0)   # the first request pays one-off set-up
        rows = [line(f"triton, batching {batching}", n, *run_clients(n, args.clips, ask))
                for n in args.clients]
        return rows + bridge_rows(f"bridge+triton, batching {batching}", root, args.clients,
                                  args.clips, "--engine", server.url)
    finally:
        server.kill()


def loop_rows(bundle: Path, sizes: list[int], repeats: int) -> list[str]:
    """Rows comparing one ``generate_batch`` of N requests with N ``generate_samples`` calls."""
    from engine.api import load_model
    from engine.inference_kernels import use_native_cpu_kernels
    from engine.sample_generation import (SampleRequest, batch_key, generate_batch,
                                          generate_samples)
    from engine.tempo import Tempo

    use_native_cpu_kernels()   # as the Triton model and the bridge's generator
    model = load_model(str(bundle))
    tempo = Tempo(BPM, METER)
    rows = []
    for n in sizes:
        requests = [SampleRequest("four-on-the-floor house beat, bpm: 120",
                                  {"mode": "ar", "seed": 1000 * i}, tempo.frames(BARS, RATE),
                                  RATE, tempo) for i in range(n)]
        assert len({batch_key(model, r) for r in requests}) == 1
        generate_batch(model, requests[:2], lambda f: None)   # one-off set-up
        walls: dict[str, list[float]] = {"batched": [], "alone": []}
        for _ in range(repeats):
            t0 = time.monotonic()
            generate_batch(model, requests, lambda f: None)
            walls["batched"].append(time.monotonic() - t0)
            t0 = time.monotonic()
            for r in requests:
                generate_samples(model, r, lambda f: None)
            walls["alone"].append(time.monotonic() - t0)
        for label, times in walls.items():
            rows.append(f"| loop, {n} {label} | {n} | {n * repeats} | "
                        f"{n * repeats / sum(times):.2f} | {np.median(times):.2f} | "
                        f"{max(times):.2f} |\n")
    return rows


def main() -> int:
    from export.triton_model import DEFAULT_MAX_BATCH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["debug", "default"])
    ap.add_argument("--clients", nargs="*", type=int, default=[1, 4, 16],
                    help="client counts (none: only --loop-batches)")
    ap.add_argument("--clips", type=int, default=2, help="clips per client")
    ap.add_argument("--instances", type=int, default=1, help="instances of the Triton model")
    ap.add_argument("--batching", nargs="+", choices=("on", "off"), default=["on", "off"],
                    help="the Triton model's batching settings to run (default both)")
    ap.add_argument("--loop-batches", nargs="*", type=int, default=[],
                    help="also time the decoding loop alone: N requests batched vs one by one")
    ap.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                    help=f"requests one instance takes at once with batching on "
                         f"(default {DEFAULT_MAX_BATCH})")
    args = ap.parse_args()
    env = triton_env.ensure()
    if isinstance(env, str):
        raise SystemExit(f"no Triton environment: {env}")
    served = (f"Triton model instances {args.instances}, batching {' / '.join(args.batching)} "
              f"(max batch {args.max_batch})" if args.clients else "the decoding loop only")
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M')}: {BARS}-bar loops, {args.clips} per client, "
            f"{served}\n\nIndicative, under load: "
            f"{os.cpu_count()} CPUs shared with other jobs, CPU only; before: {load_line()}\n\n"
            "| model | path | clients | clips | clips/s | p50 s | p99 s |\n"
            "|---|---|---|---|---|---|---|\n")
    with tempfile.TemporaryDirectory(prefix="bench_triton_") as tmp:
        for model_name in args.models:
            root = Path(tmp) / model_name
            repo = export(model_name, root, args.instances)
            rows = []
            for batching in args.batching if args.clients else []:
                rows += triton_rows(env, root, repo, args, batching)
            # the same bundle the Triton model runs: paths compared, not backends
            rows += bridge_rows("local bridge", root, args.clients, args.clips,
                                "--model", str(root / "bundle"))
            rows += loop_rows(root / "bundle", args.loop_batches, args.clips)
            text += "".join(f"| {model_name} " + r for r in rows)
    text += (f"\nafter: {load_line()}. With batching on, one instance decodes the queued "
             "requests that share a batch_key in one loop; off, one request at a time.")
    if args.loop_batches:
        text += (" `loop, N batched` / `loop, N alone`: N requests in one generate_batch / one "
                 "after another, in-process, no server (p50 / p99 columns: wall s of the N).")
    text += "\n"
    append_results(OUT, "Generation through Triton vs the local bridge (bench/bench_triton.py)",
                   text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
