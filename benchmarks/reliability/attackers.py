"""The attack part: a legitimate sender beside idle and stalling peers, a PDU declaring 4 GiB,
HTTP, and TLS peers that never say hello; its success rate, added latency and hangs.
"""

from __future__ import annotations

import multiprocessing
import socket
import ssl
import struct
import time
import warnings
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage

from benchmarks.reliability.common import (
    CONTEXTS,
    HANG,
    TIMEOUT,
    Server,
    ms_percentiles,
    payload,
)
from testsupport.peers import self_signed
from testsupport.rawdicom import Association, Closed, Store


def _attacker(port: int, kind: str, done: Any, out: Any) -> None:
    """Repeat one attack until `done` is set; count tries and connections never closed."""
    tries = unclosed = 0
    deadline_grace = TIMEOUT + 10
    while not done.is_set():
        tries += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=deadline_grace) as sock:
                if kind == "stall":
                    sock.sendall(struct.pack(">BBL", 0x01, 0, 200) + b"\0" * 10)
                elif kind == "huge":
                    sock.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\0" * 64)
                elif kind == "http":
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n")
                while sock.recv(4096):  # idle / silent TLS: send nothing, wait to be dropped
                    pass
        except TimeoutError:
            unclosed += 1
        except OSError:
            pass
        if kind in ("huge", "http"):
            time.sleep(0.02)
    out.put((kind, tries, unclosed))


def _legit(port: int, count: int, tag: str, tls: ssl.SSLContext | None) -> dict:
    """Send `count` instances (TLS when given), one association per 10, timing each C-STORE."""
    warnings.simplefilter("ignore")
    ok = hangs = busy = 0
    rtts: list[float] = []
    for start in range(0, count, 10):
        try:
            assoc = Association(port, CONTEXTS, timeout=HANG, tls=tls)
        except TimeoutError:
            hangs += 1
            continue
        except (OSError, Closed) as error:
            busy += "reject 2/3/2" in str(error)
            continue
        with assoc:
            for index in range(start, min(start + 10, count)):
                uid, data = payload(index, tag)
                sent = time.monotonic()
                try:
                    status = assoc.store(Store(CTImageStorage, uid, data))
                except TimeoutError:
                    hangs += 1
                    break
                except (OSError, Closed):
                    break
                if status == 0:
                    ok += 1
                    rtts.append(time.monotonic() - sent)
    return {"sent": count, "ok": ok, "hangs": hangs, "busy": busy, "rtts": rtts}


def _legit_process(args: tuple) -> dict:
    port, count, tag, cert = args
    context = None
    if cert is not None:
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
    return _legit(port, count, tag, context)


def attack(workdir: Path, legit: int, idle: int, stalls: int) -> dict:
    report = {}
    plain = Server(workdir / "attack", "--min-free-mb", "0")
    plain.workdir.mkdir()
    kinds = ["idle"] * idle + ["stall"] * stalls + ["huge", "http"]
    report["plain"] = _attack_run(plain, legit, kinds, cert=None)
    tls_dir = workdir / "attack-tls"
    tls_dir.mkdir()
    key, cert = self_signed(tls_dir)
    tls = Server(tls_dir, "--min-free-mb", "0", "--tls-cert", str(cert), "--tls-key", str(key))
    report["tls"] = _attack_run(tls, legit, ["silent-tls"] * (idle + stalls), cert=str(cert))
    return report


def _attack_run(server: Server, legit: int, kinds: list[str], cert: str | None) -> dict:
    server.start()
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        baseline = pool.apply(_legit_process, ((server.port, legit, "baseline", cert),))
        out, done = context.Queue(), context.Event()
        attackers = [
            context.Process(target=_attacker, args=(server.port, kind, done, out)) for kind in kinds
        ]
        for process in attackers:
            process.start()
        time.sleep(0.5)  # attackers in place first
        attacked = pool.apply(_legit_process, ((server.port, legit, "attacked", cert),))
        done.set()
        counts = [out.get(timeout=TIMEOUT + 30) for _ in attackers]
        for process in attackers:
            process.join(10)
    peak = server.peak_rss_mb()
    alive = server.alive()
    server.stop()
    base_p50 = ms_percentiles(baseline["rtts"])["p50_ms"]
    under = ms_percentiles(attacked["rtts"])
    return {
        "attackers": {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)},
        "legit_sent": attacked["sent"],
        "legit_success_rate": round(attacked["ok"] / attacked["sent"], 4),
        "legit_associations_rejected_busy": attacked["busy"],
        "baseline_success_rate": round(baseline["ok"] / baseline["sent"], 4),
        "baseline_rtt": ms_percentiles(baseline["rtts"]),
        "attacked_rtt": under,
        "added_latency_p50_ms": (
            round(under["p50_ms"] - base_p50, 2)
            if under["p50_ms"] is not None and base_p50 is not None
            else None
        ),
        "attack_connections": sum(tries for _, tries, _ in counts),
        "attack_connections_never_closed": sum(unclosed for _, _, unclosed in counts),
        "hangs": attacked["hangs"] + baseline["hangs"] + sum(u for _, _, u in counts),
        "server_alive": alive,
        "server_peak_rss_mb": peak,
    }
