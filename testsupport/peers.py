"""Real network peers for tests: free ports, server processes, synthetic instances."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
needs_dcmtk = pytest.mark.skipif(
    shutil.which("storescu") is None or shutil.which("echoscu") is None,
    reason="dcmtk not found: apt-get install dcmtk",
)


T = TypeVar("T")


def poll(
    read: Callable[[], T],
    done: Callable[[T], object] = bool,
    timeout: float = 20,
    every: float = 0.05,
) -> T:
    """`read()` again until `done` says its value is the one awaited or `timeout` passes; the
    last value either way (read once more at the deadline), for the caller's assertion."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = read()
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20, host: str = "127.0.0.1") -> None:
    """Block until something accepts on `port`; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


def start_serve(
    *args: str, port: int, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """`edgeimg serve` as a user runs it, listening on `port`, JSON log in cwd/serve.log;
    `env` adds to (or overrides) this process's environment, e.g. $EDGEIMG_ENGINES."""
    command = [sys.executable, "-m", "edgeimg", "serve", "--port", str(port), *args]
    given = {**os.environ, **(env or {})}
    path = os.pathsep.join(filter(None, [str(ROOT), given.get("PYTHONPATH")]))
    environment = {**given, "PYTHONPATH": path, "PYTHONFAULTHANDLER": "1"}
    log = open(cwd / "serve.log", "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=log, stderr=log)
    log.close()
    wait_for_port(port)
    return process


def wait_for_event(log: Path, event: str, process: subprocess.Popen, timeout: float) -> None:
    """Block until serve's JSON log has `event` (say, engine_ready); when the server exits or
    the time runs out, stop it and fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while f'"{event}"'.encode() not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"edgeimg serve logged no {event} ({process.returncode}): {tail}")
        time.sleep(0.1)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Signal the process and wait for it; kill it if it does not go."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
        return process.wait()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway EC key and self-signed certificate for localhost (openssl), for TLS peers."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def ct_instance(series_uid: str | None = None, index: int = 1, size: int = 16) -> Dataset:
    """A small, valid CT image with file meta (no patient data beyond a fake name)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Secret^Patient"
    ds.PatientID = "SECRET-ID-42"
    ds.Modality = "CT"
    ds.InstanceNumber = index
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = (np.arange(size * size, dtype=np.int16) + index).tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dataset_bytes(data: bytes | Path) -> bytes:
    """The encoded dataset after the file meta group (sized by its group length element)."""
    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    assert raw[128:132] == b"DICM" and raw[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    return raw[144 + struct.unpack("<L", raw[140:144])[0] :]


def orthanc_rest(http_port: int, path: str, body: bytes, method: str = "POST") -> dict:
    """One call to an Orthanc REST API on loopback (uploads, modality settings, C-STORE jobs)."""
    url = f"http://127.0.0.1:{http_port}{path}"
    request = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


class Relay:
    """A plain TCP relay from loopback `port` (0: a free one) to `target_port`, bytes unchanged:
    a peer that becomes reachable, from nothing listening, at an address a process was given
    earlier."""

    def __init__(self, port: int, target_port: int) -> None:
        import threading

        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.target_port = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import threading

        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()
        _pump(conn, upstream)


class TlsProxy(Relay):
    """HTTPS in front of a loopback HTTP server, as nginx fronts a hospital's Orthanc (Debian's
    Orthanc 1.10 crashes on its own first TLS request). Bytes pass through unchanged."""

    def __init__(self, cert: Path, key: Path, target_port: int) -> None:
        import ssl

        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.handshakes_failed = 0
        super().__init__(0, target_port)

    def _serve(self, conn: socket.socket) -> None:
        import ssl

        try:
            client = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):  # a client that does not trust us hangs up here
            self.handshakes_failed += 1
            conn.close()
            return
        super()._serve(client)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes, then close both ways."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
