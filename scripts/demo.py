"""`make demo`: the main job end to end on this machine, with real peers on loopback.

A synthetic CT study goes from a "scanner" (`edgeimg send`) to `edgeimg serve`, which stores it,
runs cnn and unet on the CPU engine, and forwards SR and SEG to a PACS: a private Orthanc where
one is installed, otherwise a second edgeimg listener standing in for it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
EDGEIMG = [sys.executable, "-m", "edgeimg"]
MODELS = ("cnn", "unet")
console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def edgeimg(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEIMG, *args], check=True, cwd=ROOT, **kwargs)


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the listener exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listening on port {port} after {timeout:.0f} s")


def queue_state(spool: Path) -> list[dict]:
    done = edgeimg("queue", "--spool", str(spool), "--json", capture_output=True, text=True)
    return json.loads(done.stdout)["series"]


def start_pacs(stack: ExitStack) -> tuple[str, str, object]:
    """Orthanc where installed; otherwise a plain edgeimg listener as the results store."""
    from testsupport.pacs import Orthanc

    if Orthanc.available() is None:
        pacs = stack.enter_context(Orthanc("PACS"))
        return pacs.address, f"Orthanc (REST on http://127.0.0.1:{pacs.http_port})", pacs
    port = free_port()
    spool = OUT / "pacs-spool"
    process = subprocess.Popen(
        [
            *EDGEIMG,
            "serve",
            "--aet",
            "PACS",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--spool",
            str(spool),
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(process.terminate)
    wait_for_port(port, process)
    return f"PACS@127.0.0.1:{port}", f"an edgeimg listener spooling to {spool}", None


def main() -> None:
    started = time.perf_counter()
    subprocess.run(["rm", "-rf", str(OUT)], check=True)
    study, spool, engines = OUT / "study", OUT / "spool", OUT / "engines"
    console.rule("1. engines for this CPU (exported, compiled, verified, cached)")
    for model in MODELS:
        edgeimg("build-engine", model, "--engines-dir", str(engines))
    console.rule("2. a synthetic CT study (2 series x 24 slices, 512x512)")
    edgeimg("synth", str(study), "--series", "2", "--slices", "24", "--size", "512", "--seed", "7")
    with ExitStack() as stack:
        console.rule("3. the PACS and the listener")
        pacs_address, pacs_what, pacs = start_pacs(stack)
        console.print(f"PACS: {pacs_address}, {pacs_what}")
        port = free_port()
        log = (OUT / "serve.log").open("w")
        env = dict(os.environ, EDGEIMG_ENGINES=str(engines))
        server = subprocess.Popen(
            [
                *EDGEIMG,
                "serve",
                "--aet",
                "EDGEIMG",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--spool",
                str(spool),
                "--complete-on-release",
                "--allow",
                "SCANNER@127.0.0.1",
                *[arg for model in MODELS for arg in ("--model", model)],
                "--forward",
                pacs_address,
            ],
            cwd=ROOT,
            stderr=log,
            env=env,
        )
        stack.callback(server.wait, 60)
        stack.callback(server.terminate)
        wait_for_port(port, server)
        console.print(f"listener: EDGEIMG@127.0.0.1:{port} (log: {log.name})")
        console.rule("4. the scanner sends the study")
        sent = time.perf_counter()
        edgeimg("echo", f"EDGEIMG@127.0.0.1:{port}", "--aet", "SCANNER")
        edgeimg("send", f"EDGEIMG@127.0.0.1:{port}", str(study), "--aet", "SCANNER")
        console.rule("5. results")
        deadline = time.monotonic() + 300
        while True:
            series = queue_state(spool)
            states = {item["state"] for item in series}
            if series and states <= {"done", "failed"} and _forwards_settled(series):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"results not ready after 300 s: {series}")
            time.sleep(0.5)
        latency = time.perf_counter() - sent
        summary(spool, series, pacs_address, pacs)
        console.print(
            f"study sent to results at the PACS in {latency:.1f} s; "
            f"demo total {time.perf_counter() - started:.1f} s"
        )


def _forwards_settled(series: list[dict]) -> bool:
    return all(
        not item["forwards"].get("pending") and not item["forwards"].get("running")
        for item in series
    )


def summary(spool: Path, series: list[dict], pacs_address: str, pacs) -> None:
    lines = [json.loads(line) for line in (spool / "results" / "results.jsonl").open()]
    table = Table(title="findings per series")
    for column in ("series", "model", "finding", "outputs", "seconds"):
        table.add_column(column)
    for line in lines:
        results = line["results"]
        if line["model"] == "cnn":
            positive = sum(item["label"] for item in results)
            finding = (
                f"lesion on {positive}/{len(results)} slices "
                f"(max p={max(item['probability'] for item in results):.2f})"
            )
        else:
            finding = f"{sum(item['pixels'] for item in results)} lesion pixels (model grid)"
        outputs = ", ".join(
            Path(path).parent.name + "/" + Path(path).name[:18] + "…" for path in line["outputs"]
        )
        table.add_row(
            line["series_uid"][-12:], line["model"], finding, outputs, f"{line['seconds']:.2f}"
        )
    console.print(table)
    forwarded = sum(item["forwards"].get("done", 0) for item in series)
    failed = sum(item["forwards"].get("failed", 0) for item in series)
    console.print(f"{forwarded} result objects forwarded to {pacs_address}, {failed} failed")
    if pacs is not None:
        console.print(f"the PACS now holds: {pacs.count_by_sop_class()}")


if __name__ == "__main__":
    main()
