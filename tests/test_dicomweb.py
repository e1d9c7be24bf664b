"""DICOMweb with Orthanc's plugin: `run --from URL` by QIDO-RS + WADO-RS, and `serve --forward
https://.../dicom-web --tls-ca CA` delivering SR and SEG by STOW-RS, authenticated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from edgeimg import dicomweb
from edgeimg.cli import cli
from edgeimg.dicomweb import TOKEN_ENV, Client, check_url
from edgeimg.net import parse_peer, send
from edgeimg.serve.routing import Destination, RoutingError, parse_routing
from edgeimg.synth.dicom import write_study
from testsupport.pacs import Orthanc
from testsupport.peers import TlsProxy, free_port, start_serve, stop

needs_dicomweb = pytest.mark.skipif(
    Orthanc.available(dicomweb=True) is not None, reason=str(Orthanc.available(dicomweb=True))
)
USER, PASSWORD = "edgeimg", "s3cret-pass"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def certificates(directory: Path) -> tuple[Path, Path, Path, Path]:
    """A throwaway CA, a server certificate it signs for 127.0.0.1 and its key, and a second
    CA that signed nothing."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    key = ("-newkey", "rsa:2048", "-nodes")
    for name in ("ca", "other-ca"):
        openssl(
            "req",
            "-x509",
            *key,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-subj",
            f"/CN=edgeimg test {name}",
        )
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-days",
        "1",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-extfile",
        "san.ext",
    )
    return (
        directory / "server.crt",
        directory / "server.key",
        directory / "ca.pem",
        directory / "other-ca.pem",
    )


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def pacs():
    with Orthanc(dicomweb=True, users={USER: PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def https(pacs, tls):
    """The DICOMweb base URL over TLS, with the certificate `tls`'s CA signed."""
    proxy = TlsProxy(tls[0], tls[1], pacs.http_port)
    yield f"https://127.0.0.1:{proxy.port}/dicom-web"
    proxy.close()


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("EDGEIMG_DICOMWEB_USER", USER)
    monkeypatch.setenv("EDGEIMG_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def test_credentials_are_refused_in_the_url():
    with pytest.raises(ValueError, match="credentials do not go in the URL") as caught:
        check_url("https://me:hunter2@pacs.example/dicom-web")
    assert "hunter2" not in str(caught.value)
    assert check_url("https://pacs.example/dicom-web/") == "https://pacs.example/dicom-web"


def test_credentials_do_not_go_over_plain_http_beyond_loopback(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "tok-123")
    with pytest.raises(ValueError, match="credentials would cross the network in clear"):
        check_url("http://pacs.example/dicom-web")
    assert check_url("http://127.0.0.1:8042/dicom-web") == "http://127.0.0.1:8042/dicom-web"
    monkeypatch.delenv(TOKEN_ENV)
    assert check_url("http://pacs.example/dicom-web") == "http://pacs.example/dicom-web"


def test_a_routing_destination_may_be_a_dicomweb_url_with_its_own_ca(tmp_path):
    ca = tmp_path / "ca.pem"
    table = {
        "destination": [
            {"name": "web", "peer": "https://pacs.example/dicom-web/", "tls_ca": str(ca)}
        ]
    }
    with pytest.raises(RoutingError, match="tls_ca .* is not a file"):
        parse_routing(table, "serve.toml")
    ca.write_text("a CA")
    assert parse_routing(table, "serve.toml").destinations["web"] == Destination(
        "web", "https://pacs.example/dicom-web", tls_ca=str(ca)
    )
    table["destination"][0]["peer"] = "https://me:hunter2@pacs.example/dicom-web"
    with pytest.raises(RoutingError, match="credentials do not go in the URL") as caught:
        parse_routing(table, "serve.toml")
    assert "hunter2" not in str(caught.value)


def test_serve_tls_ca_alone_needs_an_https_forward(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read before the options are checked")
    done = CliRunner().invoke(
        cli, ["serve", "--aet", "EDGEIMG", "--tls-ca", str(ca), "--forward", "PACS@127.0.0.1:104"]
    )
    assert done.exit_code == 2
    assert "--tls-ca needs --tls-cert and --tls-key, or an https --forward" in done.output


def test_a_bearer_token_from_the_environment_goes_in_the_header(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "tok-123")
    client = Client.from_url("https://pacs.example/dicom-web")
    assert client.session.headers["Authorization"] == "Bearer tok-123"


@pytest.mark.integration
@needs_dicomweb
def test_stow_answers_per_file_in_batches(pacs, credentials, tmp_path, monkeypatch):
    monkeypatch.setattr(dicomweb, "STOW_BATCH", 2)
    write_study(tmp_path / "study", series=1, slices=4, size=32, seed=10)
    files = sorted((tmp_path / "study").rglob("*.dcm"))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not DICOM")
    with Client.from_url(pacs.dicomweb_url) as client:
        results = dicomweb.stow(client, [*files, broken])
    assert [r.path for r in results] == [*files, broken]
    assert [r.ok for r in results] == [True] * 4 + [False]
    assert results[-1].error.startswith("not a readable DICOM file")
    for path in files:
        assert pacs.find(sop_instance_uid=str(pydicom.dcmread(path).SOPInstanceUID))


@pytest.mark.integration
@needs_dicomweb
def test_run_from_dicomweb_by_qido_and_wado(pacs, https, tls, credentials, engines, tmp_path):
    study = tmp_path / "study"
    write_study(study, series=1, slices=4, size=64, seed=8)
    assert all(result.ok for result in send(parse_peer(pacs.address), [study]))
    study_uid = pydicom.dcmread(next(study.rglob("*.dcm"))).StudyInstanceUID
    out = tmp_path / "out"
    args = [
        "run",
        "cnn",
        "--from",
        https,
        "--query",
        f"StudyInstanceUID={study_uid}",
        "--query",
        "Modality=CT",
        "--out",
        str(out),
        "--engines-dir",
        str(engines),
        "--json",
    ]
    done = CliRunner().invoke(cli, [*args, "--tls-ca", str(tls[2])], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["counts"]["ok"] == 4 and summary["series"] == 1

    anonymous = CliRunner(env={"EDGEIMG_DICOMWEB_USER": None}).invoke(
        cli, [*args, "--tls-ca", str(tls[2])], catch_exceptions=False
    )
    assert anonymous.exit_code == 1
    assert anonymous.output.strip().splitlines()[-1] == (
        f"Error: QIDO-RS {https}: HTTP 401 Unauthorized (check the credentials in the environment)"
    )
    refused = CliRunner().invoke(cli, [*args, "--tls-ca", str(tls[3])], catch_exceptions=False)
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1] == (
        f"Error: QIDO-RS {https}: TLS certificate not trusted (give the CA with --tls-ca)"
    )


def queue(spool: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "edgeimg", "queue", "--spool", str(spool), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.integration
@needs_dicomweb
def test_serve_delivers_sr_and_seg_by_stow_rs_and_retries_an_untrusted_peer(
    pacs, https, tls, credentials, engines, tmp_path, monkeypatch
):
    """`--forward https://.../dicom-web --tls-ca CA` delivers; a [[destination]] that trusts
    another CA is refused at the handshake, retried, and the queue shows it pending."""
    monkeypatch.setenv("EDGEIMG_ENGINES", str(engines))
    config = tmp_path / "serve.toml"
    config.write_text(f'''
[[destination]]
name = "untrusted"
peer = "{https}"
tls_ca = "{tls[3]}"
''')
    study = tmp_path / "study"
    write_study(study, series=1, slices=4, size=64, seed=9)
    port = free_port()
    server = start_serve(
        "--config",
        str(config),
        "--aet",
        "EDGEIMG",
        "--host",
        "127.0.0.1",
        "--spool",
        str(tmp_path / "spool"),
        "--model",
        "cnn",
        "--model",
        "unet",
        "--forward",
        https,
        "--tls-ca",
        str(tls[2]),
        "--complete-on-release",
        port=port,
        cwd=tmp_path,
    )
    try:
        assert all(r.ok for r in send(parse_peer(f"EDGEIMG@127.0.0.1:{port}"), [study]))

        def arrived():
            counts = pacs.count_by_sop_class()
            return counts if counts.get(COMPREHENSIVE_3D_SR) and counts.get(SEG) else None

        counts = pacs.wait_for(arrived, timeout=240)

        def retried():
            log = (tmp_path / "serve.log").read_text()
            events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
            return [e for e in events if e["event"] == "forward_retry" and e["attempts"] >= 2]

        retries = pacs.wait_for(retried, timeout=60)
        state = queue(tmp_path / "spool")
    finally:
        assert stop(server) == 0
    assert counts[COMPREHENSIVE_3D_SR] == 1 and counts[SEG] == 1
    assert {e["destination"] for e in retries} == {"untrusted"}
    assert all("TLS certificate not trusted" in e["error"] for e in retries)
    (series,) = state["series"]
    assert series["forwards"].get("done") == 2
    assert series["forwards"].get("pending", 0) + series["forwards"].get("running", 0) == 2
    log = (tmp_path / "serve.log").read_text()
    assert PASSWORD not in log and PASSWORD not in json.dumps(state)
