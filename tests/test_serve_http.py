"""`edgeimg serve --http`: storescu as the scanner, /metrics read with prometheus-client's own
parser, the probes, the token, and the status page in headless Chromium with a PHI canary."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread
from pydicom.dataset import Dataset

from edgeimg.pipeline.decode import Decoded
from edgeimg.plugins import get_registry
from edgeimg.preview import render_slice, thumbnail
from edgeimg.serve.config import ServeConfig
from edgeimg.serve.http import (
    HttpSettingError,
    authorized,
    check_token,
    loopback_only,
    parse_address,
    status_server,
)
from edgeimg.serve.listener import Listener
from edgeimg.serve.metrics import SeriesResult, ServeMetrics, Throughput
from edgeimg.serve.page import render_page
from tests.conftest import run_edgeimg
from testsupport.canary import STUDIES, TOKEN, make_studies
from testsupport.peers import free_port, needs_dcmtk, start_serve, stop, wait_for_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: apt-get install chromium"
)
SECRET = "s3cret-token-for-the-test"
CANARY = STUDIES["lat"]
SHOWN_PHI = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")


def test_address_and_token_rules() -> None:
    assert parse_address("9100") == ("127.0.0.1", 9100)
    assert parse_address("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("host:", "host:99999", "a b:1", "x:y"):
        with pytest.raises(HttpSettingError):
            parse_address(bad)
    assert loopback_only("127.0.0.1") and loopback_only("::1") and loopback_only("localhost")
    assert not loopback_only("0.0.0.0") and not loopback_only("10.1.2.3")
    assert check_token("127.0.0.1", None) is None
    assert check_token("0.0.0.0", SECRET) == SECRET
    with pytest.raises(HttpSettingError, match="needs a token"):
        check_token("0.0.0.0", None)
    with pytest.raises(HttpSettingError, match="16 characters"):
        check_token("127.0.0.1", "short")


def test_authorization_header_check() -> None:
    basic = base64.b64encode(f"prometheus:{SECRET}".encode()).decode()
    assert authorized(None, None)
    assert authorized(f"Bearer {SECRET}", SECRET) and authorized(f"bearer  {SECRET}", SECRET)
    assert authorized(f"Basic {basic}", SECRET)
    for header in (
        None,
        "",
        SECRET,
        f"Bearer {SECRET}x",
        f"Token {SECRET}",
        "Basic !!",
        f"Bearer {SECRET[:-1]}",
    ):
        assert not authorized(header, SECRET), header


def test_page_escapes_and_keeps_identity_out_unless_asked() -> None:
    header = {"PatientName": "<b>Doe^Jane</b>", "PatientID": "ID-77"}
    pages = {}
    for show_phi in (False, True):
        metrics = ServeMetrics(show_phi=show_phi)
        metrics.series_result(
            SeriesResult(
                job=3,
                series_uid="1.2.3",
                model="<script>x</script>",
                state="done",
                finding="lesion & <i>more</i>",
                instances=4,
                finished=0.0,
                seconds=1.5,
            ),
            header,
        )
        pages[show_phi] = render_page(
            {
                "title": "edgeimg serve <T>",
                "now": 0.0,
                "ready": {"listener": True},
                "totals": {"instances": 4, "series": {"done": 1}, "jobs": {}, "forwards": {}},
                "associations": 0,
                "recent": metrics.recent(),
                "stored_per_minute": metrics.stored_per_minute.per_minute(),
                "series_per_minute": metrics.series_per_minute.per_minute(),
                "destinations": [
                    {
                        "name": "pacs",
                        "peer": "PACS@h:104",
                        "state": "failing",
                        "last_ok": None,
                        "last_error": "refused <oops>",
                        "forwards": {"pending": 1},
                    }
                ],
                "show_phi": show_phi,
                "free_bytes": 5 << 30,
            }
        )
    for page in pages.values():
        assert "<script>" not in page and "<i>" not in page and "<oops>" not in page
        assert "&lt;script&gt;x&lt;/script&gt;" in page and "lesion &amp; &lt;i&gt;" in page
    assert "Doe" not in pages[False] and "ID-77" not in pages[False]
    assert "&lt;b&gt;Doe^Jane&lt;/b&gt;" in pages[True] and "ID-77" in pages[True]


def test_preview_shows_the_slice_the_model_found_most_on(tmp_path) -> None:
    spec = get_registry().model("cnn")
    decoded = [
        Decoded(
            tmp_path / f"{i}.dcm", Dataset(), np.full((1, 1, 32, 32), i / 4, np.float32), 32, 32
        )
        for i in range(3)
    ]
    items = [{"probability": p, "label": int(p > 0.5)} for p in (0.2, 0.9, 0.4)]
    png = thumbnail(spec, decoded, items)
    shown = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    expected = np.asarray(render_slice(decoded[1], items[1], "cnn").convert("L"))
    assert png.startswith(b"\x89PNG") and np.array_equal(shown, expected)


def test_throughput_keeps_one_hour_by_minute() -> None:
    throughput = Throughput()
    start = 1_000_000 * 60.0
    throughput.add(2, now=start)
    throughput.add(1, now=start + 30)
    throughput.add(5, now=start + 60 * 59)
    counts = throughput.per_minute(now=start + 60 * 59)
    assert len(counts) == 60 and counts[0] == 3 and counts[-1] == 5 and sum(counts) == 8
    assert sum(throughput.per_minute(now=start + 60 * 60)) == 5  # the first minute has aged out


def test_readiness_follows_the_listener_and_the_disk(tmp_path) -> None:
    config = ServeConfig(
        aet="EDGE", port=0, host="127.0.0.1", spool=tmp_path / "spool", min_free_mb=0
    )
    listener = Listener(config)
    server = status_server(("127.0.0.1", 0), None, listener, {})
    base = "http://{}:{}".format(*server.start())
    try:
        status, _, body = get(f"{base}/readyz")
        assert status == 503 and b'"listener": false' in body  # not yet accepting
        listener.start()
        assert get(f"{base}/readyz")[0] == 200
        listener.spool.min_free = 1 << 62  # the disk now below the watermark: A700 for all
        status, _, body = get(f"{base}/readyz")
        assert status == 503 and b'"spool_space": false' in body
        listener.spool.min_free = 0
        listener.stop(drain_timeout=1)
        assert get(f"{base}/readyz")[0] == 503 and get(f"{base}/healthz")[0] == 200
    finally:
        listener.stop(drain_timeout=1)
        server.stop()
    assert list((tmp_path / "spool" / "incoming").iterdir()) == []  # the probe's writes went


def get(url: str, token: str | None = None, scheme: str = "Bearer") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"{scheme} {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def metrics(base: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics as parsed by prometheus-client, by (name, labels)."""
    status, headers, body = get(f"{base}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Served:
    """One serve process that has stored a series and run cnn on it."""

    base: str
    instances: int
    series_uid: str
    stored_bytes: int
    samples: dict
    tmp: Path


def _serve_and_send(engines: Path, tmp: Path, *flags: str, until) -> Served:
    folder = make_studies(tmp / "studies")["lat"]
    files = sorted(str(path) for path in folder.glob("*.dcm"))
    port, http_port = free_port(), free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEIMG_ENGINES", str(engines))
        server = start_serve(
            "--aet",
            "EDGEIMG",
            "--host",
            "127.0.0.1",
            "--spool",
            str(tmp / "spool"),
            "--model",
            "cnn",
            "--complete-on-release",
            "--allow",
            "SCANNER@127.0.0.1",
            "--http",
            f"127.0.0.1:{http_port}",
            *flags,
            port=port,
            cwd=tmp,
        )
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_for_port(http_port)
        # refused by the allow list, refused by called AE title, accepted
        for calling, called in (
            ("INTRUDER", "EDGEIMG"),
            ("SCANNER", "ELSEWHERE"),
            ("SCANNER", "EDGEIMG"),
        ):
            subprocess.run(
                ["echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
                capture_output=True,
                timeout=30,
            )
        subprocess.run(
            ["storescu", "-aet", "SCANNER", "-aec", "EDGEIMG", "127.0.0.1", str(port), *files],
            check=True,
            capture_output=True,
            timeout=120,
        )
        deadline = time.monotonic() + 240
        while not until(samples := metrics(base)):
            assert time.monotonic() < deadline, "serve did not finish the series in time"
            assert server.poll() is None, (tmp / "serve.log").read_text()[-2000:]
            time.sleep(0.5)
        yield Served(
            base,
            len(files),
            str(dcmread(files[0]).SeriesInstanceUID),
            sum(Path(f).stat().st_size for f in files),
            samples,
            tmp,
        )
    finally:
        assert stop(server, signal.SIGTERM) == 0
    assert TOKEN.encode() not in (tmp / "serve.log").read_bytes()


def _job_done(samples: dict) -> bool:
    return value(samples, "edgeimg_jobs_finished_total", model="cnn", state="done") >= 1


@pytest.fixture(scope="module")
def served(engines, tmp_path_factory):
    """Results forwarded to a peer that is not there: retries and an unhealthy destination."""
    dead = f"DEAD@127.0.0.1:{free_port()}"

    def retried(samples: dict) -> bool:
        return (
            _job_done(samples)
            and value(samples, "edgeimg_forward_attempts_total", destination=dead, outcome="retry")
            >= 1
        )

    tmp = tmp_path_factory.mktemp("http")
    yield from _serve_and_send(engines, tmp, "--forward", dead, until=retried)


@pytest.fixture(scope="module")
def served_phi(engines, tmp_path_factory):
    def delivered(samples: dict) -> bool:
        return value(samples, "edgeimg_end_to_end_seconds_count", model="cnn") >= 1

    tmp = tmp_path_factory.mktemp("http-phi")
    yield from _serve_and_send(engines, tmp, "--http-show-phi", until=delivered)


@pytest.mark.integration
@needs_dcmtk
def test_metrics_count_what_was_sent(served) -> None:
    samples = metrics(served.base)
    n = served.instances
    assert value(samples, "edgeimg_instances_received_total") == n
    assert value(samples, "edgeimg_instances_stored_total") == n
    assert value(samples, "edgeimg_instances_duplicate_total") == 0
    assert value(samples, "edgeimg_cstore_responses_total", status="0x0000") == n
    # the spool holds the file meta header we add to the dataset storescu sent
    assert 0 < value(samples, "edgeimg_received_bytes_total") <= served.stored_bytes
    assert value(samples, "edgeimg_stored_bytes_total") > value(
        samples, "edgeimg_received_bytes_total"
    )
    assert value(samples, "edgeimg_associations_accepted_total") == 2  # echo and store
    refused = {
        dict(labels)["reason"]: count
        for (name, labels), count in samples.items()
        if name == "edgeimg_associations_refused_total"
    }
    assert refused == {"not allowed": 1, "called AE title": 1}
    assert value(samples, "edgeimg_associations_open") == 0
    assert value(samples, "edgeimg_queue_instances") == n
    assert value(samples, "edgeimg_queue_series", state="done") == 1
    assert value(samples, "edgeimg_queue_jobs", state="done") == 1
    assert value(samples, "edgeimg_job_seconds_count", model="cnn") == 1
    assert value(samples, "edgeimg_spool_free_bytes") > 0
    (engine,) = [labels for name, labels in samples if name == "edgeimg_engine_info"]
    assert dict(engine)["model"] == "cnn" and dict(engine)["backend"] and dict(engine)["key"]
    dead = next(
        dict(labels)["destination"]
        for name, labels in samples
        if name == "edgeimg_destination_healthy"
    )
    assert value(samples, "edgeimg_destination_healthy", destination=dead) == 0
    assert (
        value(samples, "edgeimg_forward_attempts_total", destination=dead, outcome="delivered") == 0
    )
    # never delivered, so no end-to-end latency yet
    assert value(samples, "edgeimg_end_to_end_seconds_count", model="cnn") == 0


@pytest.mark.integration
@needs_dcmtk
def test_probes(served) -> None:
    assert get(f"{served.base}/healthz")[:3:2] == (200, b"ok\n")
    status, headers, body = get(f"{served.base}/readyz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body.startswith(b'{"ready": true') and b"false" not in body
    assert get(f"{served.base}/nothing")[0] == 404


@pytest.mark.integration
@needs_dcmtk
def test_page_shows_the_series_without_phi(served) -> None:
    status, headers, body = get(f"{served.base}/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert served.series_uid in page and "lesion on" in page and "failing" in page
    assert TOKEN not in page and CANARY["PatientBirthDate"] not in page
    assert TOKEN.encode() not in get(f"{served.base}/metrics")[2]
    png = get(f"{served.base}/preview/1.png")
    assert png[0] == 200 and png[1]["Content-Type"] == "image/png"
    assert png[2].startswith(b"\x89PNG\r\n\x1a\n") and TOKEN.encode() not in png[2]


@pytest.mark.integration
@needs_dcmtk
def test_page_shows_phi_when_the_operator_asks(served_phi) -> None:
    page = get(f"{served_phi.base}/")[2].decode()
    assert served_phi.series_uid in page
    for keyword in SHOWN_PHI:
        assert str(CANARY[keyword]) in page, keyword
    assert CANARY["SeriesDescription"] not in page  # only the four identifiers, nothing else
    samples = metrics(served_phi.base)
    # no destination: the series' journey ends when its results are written
    assert value(samples, "edgeimg_end_to_end_seconds_count", model="cnn") == 1


@pytest.mark.integration
@needs_dcmtk
@needs_chromium
def test_chromium_screenshot_of_the_status_page(served) -> None:
    profile = served.tmp / "chromium-profile"
    shot = served.tmp / "status-page.png"
    browse = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
    ]
    dom = subprocess.run(
        [*browse, "--dump-dom", f"{served.base}/"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert served.series_uid in dom and "lesion on" in dom and TOKEN not in dom
    subprocess.run(
        [*browse, f"--screenshot={shot}", f"{served.base}/"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    artifacts = os.environ.get("EDGEIMG_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)


@pytest.mark.integration
@needs_dcmtk
def test_token_guards_a_listener_beyond_loopback(tmp_path) -> None:
    port, http_port = free_port(), free_port()
    common = ("--aet", "EDGEIMG", "--host", "127.0.0.1", "--spool", str(tmp_path / "spool"))
    without = {key: value for key, value in os.environ.items() if key != "EDGEIMG_HTTP_TOKEN"}
    refused = run_edgeimg(
        "serve", *common, "--port", str(port), "--http", f"0.0.0.0:{http_port}", env=without
    )
    assert refused.returncode == 2 and "needs a token" in refused.stderr
    assert "Traceback" not in refused.stderr
    alone = run_edgeimg("serve", *common, "--port", str(port), "--http-show-phi")
    assert alone.returncode == 2 and "--http-show-phi needs --http" in alone.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEIMG_HTTP_TOKEN", SECRET)
        server = start_serve(*common, "--http", f"0.0.0.0:{http_port}", port=port, cwd=tmp_path)
    try:
        wait_for_port(http_port)
        base = f"http://127.0.0.1:{http_port}"
        basic = base64.b64encode(f"anyone:{SECRET}".encode()).decode()
        for path in ("/metrics", "/", "/preview/1.png"):
            status, headers, _ = get(base + path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
            assert get(base + path, "wrong-token-of-some-length")[0] == 401
        assert get(base + "/metrics", SECRET)[0] == 200
        assert get(base + "/", basic, scheme="Basic")[0] == 200
        assert get(base + "/healthz")[0] == 200 and get(base + "/readyz")[0] == 200
    finally:
        assert stop(server, signal.SIGTERM) == 0
    assert SECRET not in (tmp_path / "serve.log").read_text()
