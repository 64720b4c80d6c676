"""Generation through Triton Inference Server vs the local bridge alone (issue 21).

    PYTHONPATH=. python3 bench/bench_triton.py [--models debug default] [--clients 1 4 16]
        [--clips 2] [--instances 1]

For each model: exports its bundle with the Triton repository (``barforge export --triton``),
starts tritonserver (the venv of tests/triton_env.py) and, for each client count N, N clients
at once each ask for ``--clips`` 4-bar loops (120 BPM, 4/4, 48 kHz, a seed of their own) and
wait for each:

- ``triton``: each client a gRPC stream to the server's ``barforge`` model (what N bridges
  beside N DAWs send it; bridge/triton_engine.py's client);
- ``bridge+triton``: OSC clients of one ``barforge serve --engine triton://`` bridge;
- ``local bridge``: OSC clients of one ``barforge serve --model M`` (no Triton).

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["debug", "default"])
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--clips", type=int, default=2, help="clips per client")
    ap.add_argument("--instances", type=int, default=1, help="instances of the Triton model")
    args = ap.parse_args()
    env = triton_env.ensure()
    if isinstance(env, str):
        raise SystemExit(f"no Triton environment: {env}")
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M')}: {BARS}-bar loops, {args.clips} per client, "
            f"Triton model instances {args.instances}\n\nIndicative, under load: "
            f"{os.cpu_count()} CPUs shared with other jobs, CPU only; before: {load_line()}\n\n"
            "| model | path | clients | clips | clips/s | p50 s | p99 s |\n"
            "|---|---|---|---|---|---|---|\n")
    with tempfile.TemporaryDirectory(prefix="bench_triton_") as tmp:
        for model_name in args.models:
            root = Path(tmp) / model_name
            repo = export(model_name, root, args.instances)
            server = triton_env.TritonServer(env, repo, root / "tritonserver.log")
            server.start()
            try:
                rows = []
                for label, extra in (("triton", None), ("bridge+triton", ("--engine", server.url)),
                                     # the same bundle the Triton model runs: paths compared, not backends
                                     ("local bridge", ("--model", str(root / "bundle")))):
                    for n in args.clients:
                        if extra is None:
                            ask = triton_asker(server.url.removeprefix("triton://"))
                            ask(0, 0)   # the first request pays one-off set-up
                            rows.append(line(label, n, *run_clients(n, args.clips, ask)))
                            continue
                        shm, port = f"bfbench{os.getpid()}{n}", free_port()
                        render = root / f"render-{label}-{n}"
                        render.mkdir()
                        proc, _ = start_server(shm, render, port, *extra, model=None,
                                               max_seconds=60, timeout=600)
                        try:
                            ask = osc_asker(port, n)
                            ask(0, args.clips)  # waits out the bridge's warm-up and one-off set-up
                            rows.append(line(label, n, *run_clients(n, args.clips, ask)))
                        finally:
                            stop_server(proc, shm)
                text += "".join(f"| {model_name} " + r for r in rows)
            finally:
                server.kill()
    text += (f"\nafter: {load_line()}. The Triton model runs one generation per instance at a "
             "time; concurrent requests are not batched into one decoding loop.\n")
    append_results(OUT, "Generation through Triton vs the local bridge (bench/bench_triton.py)",
                   text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
