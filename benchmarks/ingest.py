"""How fast does `edgeimg serve` take instances in, against listeners that promise less?

The same dcmtk `storescu` client sends 200 synthetic 512x512 CT files in one association to:
(a) `edgeimg serve` with a durable spool and `--model cnn` loaded (CPU engine, warm before
timing; `--series-timeout` long so the series does not complete and run the model inside a
timing), (b) dcmtk `storescp` writing to the same filesystem (no fsync), and (c) a bare
pynetdicom listener writing the received bytes (no fsync, no checks). Peers are alternated in
rounds (order rotated each round), each on a fresh directory and port; a peer's figure is its
median over the rounds. Every process gets TCP_NODELAY=1 (dcmtk reads it; without it dcmtk
stalls about 40 ms per instance on loopback). Bars: edgeimg/storescp >= 1.0 and
edgeimg/pynetdicom >= 0.8. The report also gives one durable store (spool write with its fsyncs,
queue commit) timed here without the network: a serial client cannot get responses faster.
`python -m benchmarks.ingest [--rounds N] [--files N]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeimg.device import cpu_model
from edgeimg.engine import load_engine
from edgeimg.plugins import get_registry
from edgeimg.serve.queue import Instance, Queue
from edgeimg.serve.spool import Spool
from edgeimg.synth.dicom import write_study
from testsupport.peers import free_port, start_serve, stop, wait_for_event, wait_for_port

FILES, SIZE, ROUNDS = 200, 512, 3
MODEL = "cnn"
AET = "EDGEIMG"
BARS = {"storescp": 1.0, "pynetdicom": 0.8}
READY_TIMEOUT = 180

# The bare listener: what a user gets from pynetdicom's storage example, writing the bytes
# exactly as received (encoded_dataset adds the file meta, it does not re-encode).
BARE_LISTENER = """
import os, sys
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

out, port = sys.argv[1], int(sys.argv[2])

def on_store(event):
    path = os.path.join(out, event.request.AffectedSOPInstanceUID + ".dcm")
    with open(path, "wb") as handle:
        handle.write(event.encoded_dataset(include_meta=True))
    return 0x0000

ae = AE(ae_title="EDGEIMG")
ae.supported_contexts = AllStoragePresentationContexts
ae.add_supported_context(Verification)
ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, on_store)])
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1", **extra}


def _edgeimg(directory: Path, port: int, engines: Path) -> subprocess.Popen:
    process = start_serve(
        *("--aet", AET, "--host", "127.0.0.1", "--spool", str(directory / "spool")),
        *("--model", MODEL, "--series-timeout", "3600", "--min-free-mb", "0"),
        port=port,
        cwd=directory,
        env={"TCP_NODELAY": "1", "EDGEIMG_ENGINES": str(engines)},
    )
    wait_for_event(directory / "serve.log", "engine_ready", process, READY_TIMEOUT)
    return process


def _storescp(directory: Path, port: int, engines: Path) -> subprocess.Popen:
    (directory / "out").mkdir()
    command = ["storescp", "-aet", AET, "-od", str(directory / "out"), str(port)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )


def _pynetdicom(directory: Path, port: int, engines: Path) -> subprocess.Popen:
    (directory / "out").mkdir()
    command = [sys.executable, "-c", BARE_LISTENER, str(directory / "out"), str(port)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )


PEERS: dict[str, Callable[[Path, int, Path], subprocess.Popen]] = {
    "edgeimg": _edgeimg,
    "storescp": _storescp,
    "pynetdicom": _pynetdicom,
}


def _stored(name: str, directory: Path) -> int:
    """How many instances the peer holds after the send (a check that it really stored them)."""
    if name == "edgeimg":
        return sum(1 for _ in (directory / "spool" / "series").glob("*/*.dcm"))
    return sum(1 for _ in (directory / "out").iterdir())


def _round(name: str, files: list[str], scratch: Path, engines: Path) -> float:
    """Start the peer fresh, time one storescu association with every file, stop the peer."""
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    port = free_port()
    process = PEERS[name](directory, port, engines)
    try:
        wait_for_port(port, timeout=READY_TIMEOUT)
        command = ["storescu", "-aet", "SCANNER", "-aec", AET, "127.0.0.1", str(port), *files]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
        seconds = time.perf_counter() - started
    finally:
        stop(process, signal.SIGTERM)
    if done.returncode != 0:
        raise RuntimeError(f"storescu to {name} failed ({done.returncode}): {done.stderr[-2000:]}")
    stored = _stored(name, directory)
    if stored != len(files):
        raise RuntimeError(f"{name} stored {stored} of {len(files)} instances")
    shutil.rmtree(directory, ignore_errors=True)
    return seconds


def _floor(scratch: Path, sample: Path, count: int = 40) -> dict[str, float]:
    """One durable store on this filesystem without any network (median ms of `count`).

    What no C-STORE response of ours can beat: storescp's whole per-instance time is compared
    with it in the report.
    """
    spool = Spool(scratch / "floor")
    queue = Queue(spool.queue_path)
    data = sample.read_bytes()
    writes, commits = [], []
    for number in range(count):
        uid = f"1.2.826.0.1.{number}"
        path = spool.path_for("1.2.826.0.1", uid)
        started = time.perf_counter()
        spool.write(path, [data], len(data))
        written = time.perf_counter()
        queue.add_instance(
            Instance(
                uid,
                "1.2.826.0.1",
                "1.2.826.0",
                "1.2",
                "CT",
                str(path),
                len(data),
                "-",
                "SCU",
                "127.0.0.1",
            )
        )
        writes.append(written - started)
        commits.append(time.perf_counter() - written)
    queue.close()
    return {
        "spool_write_ms": round(statistics.median(writes) * 1e3, 2),
        "queue_commit_ms": round(statistics.median(commits) * 1e3, 2),
    }


def _device() -> dict[str, Any]:
    dcmtk = subprocess.run(["storescu", "--version"], capture_output=True, text=True).stdout
    import pynetdicom

    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pynetdicom": pynetdicom.__version__,
        "dcmtk": dcmtk.splitlines()[0] if dcmtk else None,
    }


def run(rounds: int = ROUNDS, count: int = FILES) -> dict[str, Any]:
    """All peers, `rounds` interleaved rounds each; a JSON-able report."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgeimg-ingest-") as scratch_name:
        scratch = Path(scratch_name)
        study = write_study(scratch / "study", series=1, slices=count, size=SIZE, seed=7)
        files = sorted(str(path) for path in (study.out_dir / "series-001").glob("*.dcm"))
        size = sum(os.path.getsize(path) for path in files)
        engines = scratch / "engines"
        engine = load_engine(
            get_registry().model(MODEL), get_registry().backends, engines_dir=engines, build=True
        )
        floor = _floor(scratch, Path(files[0]))
        seconds: dict[str, list[float]] = {name: [] for name in PEERS}
        names = list(PEERS)
        for number in range(rounds):
            for name in names[number % len(names) :] + names[: number % len(names)]:
                seconds[name].append(_round(name, files, scratch, engines))
                print(f"round {number + 1} {name}: {seconds[name][-1]:.2f} s", file=sys.stderr)
    peers = {
        name: {
            "seconds": [round(value, 3) for value in values],
            "instances_per_s": round(len(files) / statistics.median(values), 1),
        }
        for name, values in seconds.items()
    }
    ours = peers["edgeimg"]["instances_per_s"]
    ratios = {name: round(ours / peers[name]["instances_per_s"], 3) for name in BARS}
    per_instance = {
        name: round(1e3 / figures["instances_per_s"], 2) for name, figures in peers.items()
    }
    return {
        "settings": {
            "files": len(files),
            "size": SIZE,
            "megabytes": round(size / 1e6, 1),
            "rounds": rounds,
            "model": MODEL,
            "engine": engine.key,
            "client": "storescu, one association, TCP_NODELAY=1",
            "durability": {
                "edgeimg": "temp file, fsync, rename, dir fsync, SQLite commit (WAL, FULL)",
                "storescp": "write, no fsync",
                "pynetdicom": "write, no fsync",
            },
        },
        "device": _device(),
        "load_average_1m": {
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "peers": peers,
        "per_instance_ms": per_instance,
        "durable_store_without_network_ms": floor,
        "ratios": ratios,
        "bars": BARS,
        "met": all(ratios[name] >= bar for name, bar in BARS.items()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--files", type=int, default=FILES)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args.rounds, args.files)
    from benchmarks.__main__ import write_result

    for name, figures in report["peers"].items():
        print(f"{name:<11} {figures['instances_per_s']:>7} instances/s  {figures['seconds']}")
    print(f"ratios {report['ratios']} (bars {BARS}: {'met' if report['met'] else 'NOT met'})")
    print(write_result("ingest", report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
