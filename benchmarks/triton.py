"""`edgeimg run` with the engine on this box vs through Triton (`edgeimg host`), 1 and 4 clients.

A real tritonserver (PyTriton, started by `edgeimg host cnn` on free loopback ports) hosts the
same verified ONNX Runtime engine that the local runs use. Measured in one go, on one machine:
(a) `edgeimg run cnn --backend onnxruntime`, (b) the same with `--backend triton`, one client,
(c) four such clients at once (their images together over the longest of their run times), and
(d) the cost Triton adds to one engine call of a batch of 8 (medians, calls interleaved, in
this process, which never imports torch).
Bars: (b)/(a) >= 0.7; (c)/(a) >= 0.8. Server and clients share this box's cores: what this
shows is that the dynamic batcher absorbs the clients, not that a remote GPU is faster.
`python -m benchmarks.triton`; every `run` decodes in its own process (--workers 0).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg.device import cpu_model
from edgeimg.engine import load_engine
from edgeimg.plugins import get_registry
from edgeimg.synth.dicom import write_study

MODEL = "cnn"
SERIES, SLICES, SIZE = 4, 32, 256
CLIENTS = 4
BATCH = 8
CALLS = 200
BARS = {"one_client": 0.7, "four_clients": 0.8}
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _edgeimg(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeimg", *args]


def _host(engines: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`edgeimg host cnn` in its own process group; returns it and its gRPC target when ready."""
    import tritonclient.grpc as grpc

    ports = [_free_port() for _ in range(3)]
    command = _edgeimg(
        "host",
        MODEL,
        "--engines-dir",
        str(engines),
        "--address",
        "127.0.0.1",
        f"--http-port={ports[0]}",
        f"--grpc-port={ports[1]}",
        f"--metrics-port={ports[2]}",
    )
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    target = f"127.0.0.1:{ports[1]}"
    client = grpc.InferenceServerClient(target)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if client.is_model_ready(MODEL):
                return process, target
        except Exception:  # not up yet
            pass
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"edgeimg host did not come up: {log.read_text()[-2000:]}")


def _runs(study: Path, engines: Path, scratch: Path, backend: str, target: str, n: int) -> list:
    """`n` concurrent `edgeimg run` processes; their JSON summaries."""
    processes = [
        subprocess.Popen(
            _edgeimg(
                "run",
                MODEL,
                str(study),
                "--backend",
                backend,
                "--triton",
                target,
                "--engines-dir",
                str(engines),
                "--out",
                str(scratch / f"out-{backend}-{n}-{i}"),
                "--workers",
                "0",
                "--json",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        for i in range(n)
    ]
    summaries = []
    for process in processes:
        stdout, _ = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"edgeimg run --backend {backend} failed: {stdout[-500:]!r}")
        summaries.append(json.loads(stdout))
    return summaries


def _throughput(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    images = sum(s["images"] for s in summaries)
    seconds = max(s["seconds"] for s in summaries)
    return {
        "clients": len(summaries),
        "images": images,
        "seconds": seconds,
        "images_per_s": round(images / seconds, 2),
    }


def _median_ms(engines: list[Any], batch: np.ndarray) -> list[float]:
    """Median milliseconds per call of each engine, calls interleaved so load hits both alike."""
    times: list[list[float]] = [[] for _ in engines]
    for engine in engines:
        engine.run(batch)
    for _ in range(CALLS):
        for engine, samples in zip(engines, times, strict=True):
            started = time.perf_counter()
            engine.run(batch)
            samples.append(time.perf_counter() - started)
    return [statistics.median(samples) * 1e3 for samples in times]


def _overhead(engines: Path, target: str) -> dict[str, float]:
    registry = get_registry()
    spec, backends = registry.model(MODEL), registry.backends
    local = load_engine(spec, backends, "onnxruntime", engines_dir=engines)
    os.environ["EDGEIMG_TRITON"] = target
    remote = load_engine(spec, backends, "triton", engines_dir=engines)
    shape = local.manifest["profiles"][local.input_names[0]][0][1:]
    batch = np.random.default_rng(0).random((BATCH, *shape), dtype=np.float32)
    local_ms, remote_ms = _median_ms([local, remote], batch)
    return {
        "batch": BATCH,
        "calls": CALLS,
        "local_ms": round(local_ms, 3),
        "triton_ms": round(remote_ms, 3),
        "overhead_ms_per_batch": round(remote_ms - local_ms, 3),
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgeimg-bench-triton-") as temp:
        scratch = Path(temp)
        engines = scratch / "engines"
        study = scratch / "study"
        write_study(study, series=SERIES, slices=SLICES, size=SIZE, seed=1)
        for path in study.rglob("*"):
            if path.is_file() and path.suffix != ".dcm":
                path.unlink()
        # built in a child: torch's threads stay out of this process, which times engine calls
        subprocess.run(
            _edgeimg(
                "build-engine", MODEL, "--backend", "onnxruntime", "--engines-dir", str(engines)
            ),
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        process, target = _host(engines, scratch / "host.log")
        try:
            _runs(study, engines, scratch, "triton", target, 1)  # builds + verifies the engine
            local = _throughput(_runs(study, engines, scratch, "onnxruntime", target, 1))
            one = _throughput(_runs(study, engines, scratch, "triton", target, 1))
            four = _throughput(_runs(study, engines, scratch, "triton", target, CLIENTS))
            overhead = _overhead(engines, target)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
    ratios = {
        "one_client": round(one["images_per_s"] / local["images_per_s"], 3),
        "four_clients": round(four["images_per_s"] / local["images_per_s"], 3),
    }
    return {
        "model": MODEL,
        "study": {"series": SERIES, "slices": SLICES, "size": SIZE},
        "device": {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": None},
        "local": local,
        "triton_one_client": one,
        "triton_four_clients": four,
        "engine_call": overhead,
        "ratios_to_local": ratios,
        "bars": BARS,
        "passed": {name: ratios[name] >= bar for name, bar in BARS.items()},
    }


if __name__ == "__main__":
    from benchmarks.__main__ import write_result

    report = run()
    print(json.dumps(report, indent=2))
    print(write_result("triton", report), file=sys.stderr)
