"""From the last instance of a CT series to its SR at the PACS: how long does `edgeimg serve` take?

A 100-slice 512x512 synthetic CT series is sent by dcmtk `storescu` (one association) to
`edgeimg serve --model cnn --forward PACS --complete-on-release` (CPU engine, built and warm
before timing); a private Orthanc is the PACS. The clock starts at the last C-STORE response
storescu logs and stops when Orthanc's REST API lists the SR. Each repetition uses a fresh
series (new UIDs). The serve log splits the time: last response to series complete (release),
waiting for the worker, the job (scan, decode, infer, write the SR), forwarding (association to
Orthanc listing it). The job's inner split (scan, decode, infer, SR writing) is measured again
here on the last series with the same engine, after one warm-up pass.
Target: p50 under 5 s. `python -m benchmarks.serve_latency [--repetitions N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeimg.device import cpu_model
from edgeimg.engine import load_engine
from edgeimg.pipeline import Inferencer, decode_file, scan
from edgeimg.plugins import get_registry
from edgeimg.sdk.metrics import percentile
from edgeimg.synth.dicom import write_study
from testsupport.pacs import Orthanc
from testsupport.peers import free_port, start_serve, stop, wait_for_event

SLICES, SIZE, REPETITIONS = 100, 512, 5
MODEL = "cnn"
TARGET_S = 5.0
READY_TIMEOUT = 180


def _serve(scratch: Path, pacs: Orthanc, engines: Path) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    process = start_serve(
        *("--aet", "EDGEIMG", "--host", "127.0.0.1", "--spool", str(scratch / "spool")),
        *("--model", MODEL, "--forward", pacs.address, "--complete-on-release"),
        *("--series-timeout", "600", "--min-free-mb", "0"),
        port=port,
        cwd=scratch,
        env={"TCP_NODELAY": "1", "EDGEIMG_ENGINES": str(engines)},
    )
    wait_for_event(scratch / "serve.log", "engine_ready", process, READY_TIMEOUT)
    return process, port, scratch / "serve.log"


def _send(port: int, files: list[Path]) -> float:
    """storescu with every file; returns the wall-clock time of the last success response."""
    command = ["storescu", "-v", "-aet", "SCANNER", "-aec", "EDGEIMG", "127.0.0.1", str(port)]
    sender = subprocess.Popen(
        [*command, *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    last, successes = 0.0, 0
    assert sender.stdout is not None
    for line in sender.stdout:
        if "Received Store Response (Success)" in line:
            last, successes = time.time(), successes + 1
    if sender.wait() != 0 or successes != len(files):
        raise RuntimeError(f"storescu stored {successes} of {len(files)} files")
    return last


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _split(log: Path, series_uid: str, last_response: float, arrived: float) -> dict[str, float]:
    """Where one repetition's time went, from the serve log's event times."""
    events = _events(log)
    complete = next(
        e for e in events if e["event"] == "series_complete" and e["series_uid"] == series_uid
    )
    done = next(e for e in events if e["event"] == "job_done" and e["series_uid"] == series_uid)
    job_start = done["time"] - done["seconds"]
    return {
        "release_to_complete_s": round(complete["time"] - last_response, 3),
        "complete_to_job_start_s": round(job_start - complete["time"], 3),
        "job_s": round(done["seconds"], 3),
        "forwarding_s": round(arrived - done["time"], 3),
    }


def _job_inside(paths: list[Path], engines: Path, out_dir: Path) -> dict[str, float]:
    """The job's own stages on one stored series, with the engine serve used: what to speed up."""
    spec = get_registry().model(MODEL)
    inferencer = Inferencer(
        spec, load_engine(spec, get_registry().backends, engines_dir=engines, build=True)
    )
    started = time.perf_counter()
    (job,) = [job for job in scan(paths, spec).jobs if job.skip is None]
    scanned = time.perf_counter()
    decoded = [decode_file(path, spec) for path in job.paths]
    decoding = time.perf_counter()
    items = inferencer.infer(decoded)
    inference = time.perf_counter()
    inferencer.write(decoded, items, out_dir)
    written = time.perf_counter()
    return {
        "scan_s": round(scanned - started, 3),
        "decode_s": round(decoding - scanned, 3),
        "infer_s": round(inference - decoding, 3),
        "write_sr_s": round(written - inference, 3),
    }


def run(repetitions: int = REPETITIONS) -> dict[str, Any]:
    """`repetitions` fresh series through one warm server; a JSON-able report."""
    load_before = os.getloadavg()
    latencies: list[float] = []
    splits: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="edgeimg-latency-") as scratch_name:
        scratch = Path(scratch_name)
        studies = [
            write_study(scratch / f"study-{n}", series=1, slices=SLICES, size=SIZE, seed=900 + n)
            for n in range(repetitions)
        ]
        engines = scratch / "engines"
        engine = load_engine(
            get_registry().model(MODEL), get_registry().backends, engines_dir=engines, build=True
        )
        with Orthanc("PACS") as pacs:
            server, port, log = _serve(scratch, pacs, engines)
            try:
                for study in studies:
                    files = sorted((study.out_dir / "series-001").glob("*.dcm"))
                    before = len(pacs.instances())
                    last = _send(port, files)
                    pacs.wait_for(lambda n=before: len(pacs.instances()) > n, timeout=300)
                    arrived = time.time()
                    latencies.append(arrived - last)
                    uid = study.series[0].series_uid
                    splits.append(_split(log, uid, last, arrived))
                    print(f"latency {latencies[-1]:.2f} s {splits[-1]}", file=sys.stderr)
            finally:
                stop(server, signal.SIGTERM)
        _job_inside(files, engines, scratch / "warm-up")
        inside = _job_inside(files, engines, scratch / "written")
    p50, p95 = statistics.median(latencies), percentile(latencies, 95)
    return {
        "settings": {
            "slices": SLICES,
            "size": SIZE,
            "repetitions": repetitions,
            "model": MODEL,
            "engine": engine.key,
            "completion": "--complete-on-release",
            "pacs": "Orthanc (private, loopback)",
        },
        "device": {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_1m": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "latency_s": [round(value, 3) for value in latencies],
        "p50_s": round(p50, 3),
        "p95_s": round(p95, 3),
        "split_s": splits,
        "job_inside_s": inside,
        "target_s": TARGET_S,
        "met": p50 < TARGET_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repetitions", type=int, default=REPETITIONS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args.repetitions)
    from benchmarks.__main__ import write_result

    print(f"p50 {report['p50_s']} s, p95 {report['p95_s']} s (target {TARGET_S} s)")
    print(f"job inside: {report['job_inside_s']}")
    print(write_result("serve_latency", report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
