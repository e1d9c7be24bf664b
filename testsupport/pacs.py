"""A private, throwaway Orthanc PACS for tests and `make demo`.

Forwarding results is only proven when a real PACS accepts, indexes and returns them, so tests and
the demo start their own Orthanc: a temp directory, loopback ports, no plugins, nothing kept.

    with Orthanc() as pacs:
        forward_to(pacs.address)
        pacs.wait_for(lambda: pacs.find(series_uid=uid))
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Orthanc", "OrthancError"]

T = TypeVar("T")
HOST = "127.0.0.1"
FALLBACK_EXECUTABLE = "/usr/sbin/Orthanc"  # the Debian package installs it outside a user's PATH
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # orthanc-dicomweb
START_ATTEMPTS = 3  # a free port found by binding port 0 can be taken before Orthanc binds it


class OrthancError(RuntimeError):
    """Orthanc did not start, or its REST API refused a request."""


def _executable() -> str | None:
    found = shutil.which("Orthanc")
    if found:
        return found
    if os.access(FALLBACK_EXECUTABLE, os.X_OK):
        return FALLBACK_EXECUTABLE
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Orthanc:
    """An Orthanc process on loopback ports, with its storage and index in a temp directory.

    Use it as a context manager (or call `start` and `stop`): the process is terminated and the
    directory removed on exit, so no test sees another's instances.
    """

    def __init__(
        self,
        aet: str = "PACS",
        *,
        startup_timeout: float = 20.0,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        dicomweb: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        """`modalities`: C-MOVE destinations by name, (AET, host, port). `dicomweb` loads the
        DICOMweb plugin at /dicom-web/; `users` turns on HTTP basic authentication. (No HTTPS:
        Debian's Orthanc 1.10 crashes on its first TLS request; tests put a TLS proxy in front.)"""
        self._aet = aet
        self._startup_timeout = startup_timeout
        self._modalities = {name: list(entry) for name, entry in (modalities or {}).items()}
        self._dicomweb = dicomweb
        self._users = users or {}
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None
        self._port = 0
        self._http_port = 0

    @staticmethod
    def available(dicomweb: bool = False) -> str | None:
        """None when Orthanc (with its DICOMweb plugin if asked) can be run here, else why not
        (a pytest skip reason)."""
        if _executable() is None:
            return "Orthanc not found: apt-get install orthanc"
        if dicomweb and not DICOMWEB_PLUGIN.is_file():
            return "Orthanc's DICOMweb plugin not found: apt-get install orthanc-dicomweb"
        return None

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb base URL."""
        return f"http://{HOST}:{self._http_port}/dicom-web"

    @property
    def aet(self) -> str:
        return self._aet

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        """The DICOM port."""
        return self._port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def address(self) -> str:
        """The peer as edgeimg's forward options spell it: AET@host:port."""
        return f"{self._aet}@{HOST}:{self._port}"

    @property
    def directory(self) -> Path:
        """The temp directory holding config, storage, index and log (gone after `stop`)."""
        if self._directory is None:
            raise OrthancError("Orthanc is not started")
        return self._directory

    @property
    def log_path(self) -> Path:
        return self.directory / "orthanc.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Orthanc:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write a config, launch Orthanc and wait until its REST API answers."""
        reason = self.available(self._dicomweb)
        if reason:
            raise OrthancError(reason)
        if self._process is not None:
            raise OrthancError("Orthanc is already started")
        self._directory = Path(tempfile.mkdtemp(prefix="edgeimg-orthanc-"))
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                if self._launch(last_attempt=attempt == START_ATTEMPTS):
                    return
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (Orthanc closes its index cleanly), kill after 10 s, remove the directory."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _config(self) -> dict[str, Any]:
        """Orthanc 1.10 option names; everything a test or the demo relies on is explicit."""
        directory = self.directory
        return {
            "Name": f"edgeimg-test-{self._aet}",
            "StorageDirectory": str(directory / "storage"),
            "IndexDirectory": str(directory / "index"),
            "TemporaryDirectory": str(directory / "tmp"),
            "Plugins": [str(DICOMWEB_PLUGIN)] if self._dicomweb else [],
            "DicomWeb": {"Enable": self._dicomweb, "Root": "/dicom-web/"},
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self._http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self._users),
            "RegisteredUsers": self._users,
            "DicomServerEnabled": True,
            "DicomAet": self._aet,
            "DicomPort": self._port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            "DicomModalities": self._modalities,
            "OrthancPeers": {},
            "OverwriteInstances": False,
            "StorageCompression": False,
            "SaveJobs": False,
            "ExecuteLuaEnabled": False,
            "RestApiWriteToFileSystemEnabled": False,
        }

    def _launch(self, last_attempt: bool) -> bool:
        """One start on fresh ports; False when Orthanc exited early and may be retried."""
        directory = self.directory
        (directory / "tmp").mkdir(exist_ok=True)
        self._port, self._http_port = _free_port(), _free_port()
        while self._http_port == self._port:
            self._http_port = _free_port()
        config = directory / "orthanc.json"
        config.write_text(json.dumps(self._config(), indent=2))
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [_executable() or "Orthanc", str(config)],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                if last_attempt:
                    raise OrthancError(f"Orthanc exited with code {code}:\n{self.log_tail()}")
                return False
            if self._answers():
                return True
            time.sleep(0.1)
        raise OrthancError(
            f"Orthanc did not answer http://{HOST}:{self._http_port}/system within "
            f"{self._startup_timeout:g} s:\n{self.log_tail()}"
        )

    def _answers(self) -> bool:
        """The REST API is up (Orthanc starts its DICOM server before its HTTP server)."""
        try:
            self._request("/system", timeout=1)
        except (OSError, OrthancError):
            return False
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((HOST, self._port)) == 0

    def log_tail(self, lines: int = 40) -> str:
        """The end of Orthanc's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _request(self, path: str, body: Any = None, timeout: float = 10) -> bytes:
        if self._http_port == 0:
            raise OrthancError("Orthanc is not started")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for user, password in list(self._users.items())[:1]:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(
            f"http://{HOST}:{self._http_port}{path}",
            data=data,
            method="GET" if data is None else "POST",
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise OrthancError(f"{request.method} {path}: HTTP {error.code} {detail}") from error

    def _json(self, path: str, body: Any = None) -> Any:
        return json.loads(self._request(path, body))

    def instances(self) -> list[str]:
        """Orthanc IDs of every stored instance."""
        return self._json("/instances")

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """Tags by keyword, as Orthanc parsed the stored file."""
        return self._json(f"/instances/{instance_id}/simplified-tags")

    def instance_file(self, instance_id: str) -> bytes:
        """The stored Part 10 file, byte for byte."""
        return self._request(f"/instances/{instance_id}/file")

    def find(
        self,
        sop_instance_uid: str | None = None,
        series_uid: str | None = None,
        modality: str | None = None,
    ) -> list[str]:
        """Orthanc IDs of instances matching every given attribute (no filter: all of them)."""
        query = {
            keyword: value
            for keyword, value in (
                ("SOPInstanceUID", sop_instance_uid),
                ("SeriesInstanceUID", series_uid),
                ("Modality", modality),
            )
            if value is not None
        }
        return self._json("/tools/find", {"Level": "Instance", "Query": query, "Expand": False})

    def count_by_sop_class(self) -> dict[str, int]:
        """How many instances of each SOP Class UID: what a forward should have produced."""
        counts: Counter[str] = Counter()
        for instance_id in self.instances():
            sop_class = self._request(f"/instances/{instance_id}/metadata/SopClassUid")
            counts[sop_class.decode().strip()] += 1
        return dict(counts)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Poll until `predicate()` is truthy and return it; forwarding is asynchronous."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout:g} s")
            if not self.running:
                raise OrthancError(f"Orthanc is not running:\n{self.log_tail()}")
            time.sleep(0.1)


def main() -> None:
    """Serve until interrupted, for trying the listener by hand or in the demo."""
    with Orthanc() as pacs:
        print(f"Orthanc {pacs.address}, REST http://{pacs.host}:{pacs.http_port}", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while pacs.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
