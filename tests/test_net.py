"""`edgeimg echo`, `send` and `queue` through click, against a real listener on loopback."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from pydicom.filereader import read_file_meta_info

from edgeimg.cli import cli
from edgeimg.net import PeerError, parse_peer
from edgeimg.serve.config import ServeConfig
from edgeimg.serve.listener import Listener
from testsupport.pacs import Orthanc
from testsupport.peers import ct_instance, dataset_bytes, free_port, orthanc_rest, write

FILES = [
    "CT_small.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
]


@pytest.fixture
def listener(tmp_path):
    config = ServeConfig(
        aet="EDGE",
        port=0,
        host="127.0.0.1",
        spool=tmp_path / "spool",
        min_free_mb=0,
        acse_timeout=2,
        dimse_timeout=5,
    )
    server = Listener(config)
    _, port = server.start()
    server.peer = f"EDGE@127.0.0.1:{port}"
    yield server
    server.stop(drain_timeout=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PACS@10.0.0.5:104", ("PACS", "10.0.0.5", 104)),
        ("A B@host.example:11112", ("A B", "host.example", 11112)),
        ("PACS@[::1]:104", ("PACS", "::1", 104)),
    ],
)
def test_parse_peer(text, expected):
    peer = parse_peer(text)
    assert (peer.aet, peer.host, peer.port) == expected
    assert parse_peer(str(peer)) == peer


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("PACS", "expected AET@HOST:PORT"),
        ("PACS@host", "expected AET@HOST:PORT"),
        ("@host:104", "AE title ''"),
        ("SEVENTEEN_CHARS_X@h:1", "AE title 'SEVENTEEN_CHARS_X'"),
        ("BACK\\SLASH@h:1", "AE title"),
        ("PACS@:104", "host ''"),
        ("PACS@[::1:104", "host ''"),
        ("PACS@my host:104", "host 'my host'"),
        ("PACS@host:0", "port 0 is out of range (1-65535)"),
        ("PACS@host:70000", "port 70000 is out of range (1-65535)"),
        ("PACS@host:x104", "port 'x104' is not a number"),
    ],
)
def test_parse_peer_names_the_part_that_is_wrong(text, named):
    with pytest.raises(PeerError, match=re.escape(named)):
        parse_peer(text)


def test_echo_and_send_to_a_closed_port_say_so_once(tmp_path):
    peer = f"EDGE@127.0.0.1:{free_port()}"
    files = [write(ct_instance(), tmp_path / f"{n}.dcm") for n in range(3)]
    for args in (["echo", peer], ["send", peer, *map(str, files)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert result.output.count("cannot connect") == 1
        assert f"cannot connect to {peer}: connection refused" in result.output
        assert "Traceback" not in result.output and not isinstance(result.exception, Exception)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["serve", "--aet", "EDGE", "--forward", "PACS@pacs:99999"], "port 99999 is out of range"),
        (["serve", "--aet", "EDGE", "--forward", "A_TITLE_OF_17_CHR@pacs:104"], "AE title"),
        (["echo", "PACS@ :104"], "host"),
        (["send", "PACS@pacs", "."], "expected AET@HOST:PORT"),
    ],
)
def test_bad_peer_arguments_name_the_wrong_part(args, named, tmp_path):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and named in result.output
    assert "Traceback" not in result.output


def test_echo_exit_codes(listener):
    runner = CliRunner()
    ok = runner.invoke(cli, ["echo", listener.peer, "--aet", "SCU"])
    assert ok.exit_code == 0 and "0x0000" in ok.output
    wrong = runner.invoke(cli, ["echo", listener.peer.replace("EDGE@", "NOPE@")])
    assert wrong.exit_code == 1 and "rejected: called AE title not recognised" in wrong.output
    bad = runner.invoke(cli, ["echo", "nonsense"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_send_stores_file_bytes_unchanged_and_reports_failures(listener, tmp_path):
    folder = tmp_path / "in"
    for name in FILES:
        target = folder / "nested" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(get_testdata_file(name)).read_bytes())
    (folder / "notes.txt").write_text("not dicom")
    result = CliRunner().invoke(cli, ["send", listener.peer, str(folder)])
    assert result.exit_code == 0, result.output
    assert "passed over 1 files that are not DICOM" in result.output
    assert f"{len(FILES)} of {len(FILES)} stored" in result.output
    named = CliRunner().invoke(cli, ["send", listener.peer, str(folder / "notes.txt")])
    assert named.exit_code == 1 and "notes.txt" in named.output
    db = sqlite3.connect(listener.spool.queue_path)
    stored = dict(db.execute("SELECT sop_uid, path FROM instances"))
    for name in FILES:
        sent = folder / "nested" / name
        uid = str(read_file_meta_info(sent).MediaStorageSOPInstanceUID)
        assert dataset_bytes(Path(stored[uid])) == dataset_bytes(sent), name


def test_send_all_good_exits_zero_and_refused_counts_as_failure(listener, tmp_path):
    path = write(ct_instance(), tmp_path / "a.dcm")
    assert CliRunner().invoke(cli, ["send", listener.peer, str(path)]).exit_code == 0
    listener.spool.min_free = 1 << 60
    refused = CliRunner().invoke(
        cli, ["send", listener.peer, str(write(ct_instance(), tmp_path / "b.dcm"))]
    )
    assert refused.exit_code == 1 and "0xA700" in refused.output


def test_queue_json_and_retry(listener, tmp_path):
    path = write(ct_instance(), tmp_path / "a.dcm")
    assert CliRunner().invoke(cli, ["send", listener.peer, str(path)]).exit_code == 0
    spool = str(listener.spool.root)
    listing = CliRunner().invoke(cli, ["queue", "--spool", spool, "--json"])
    document = json.loads(listing.output)
    [series] = document["series"]
    assert series["instances"] == 1 and series["state"] == "received"
    db = sqlite3.connect(listener.spool.queue_path)
    with db:
        db.execute(
            "INSERT INTO jobs (series_uid, model, state, error, updated) VALUES (?, 'cnn',"
            " 'failed', 'boom', 0)",
            (series["series_uid"],),
        )
    table = CliRunner().invoke(cli, ["queue", "--spool", spool])
    assert "boom" in table.output and "job:1" in table.output
    assert CliRunner().invoke(cli, ["queue", "--spool", spool, "retry", "job:1"]).exit_code == 0
    assert CliRunner().invoke(cli, ["queue", "retry", "1", "--spool", spool]).exit_code == 1
    missing = CliRunner().invoke(cli, ["queue", "--spool", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no queue" in missing.output


@pytest.mark.skipif(Orthanc.available() is not None, reason=str(Orthanc.available()))
def test_orthanc_sends_to_the_listener_and_receives_from_send(listener):
    port = listener.ae._servers[0].server_address[1]
    with Orthanc() as pacs:
        modality = json.dumps({"AET": "EDGE", "Host": "127.0.0.1", "Port": port}).encode()
        orthanc_rest(pacs.http_port, "/modalities/edge", modality, method="PUT")
        source = Path(get_testdata_file("CT_small.dcm"))
        uploaded = orthanc_rest(pacs.http_port, "/instances", source.read_bytes())
        sent = orthanc_rest(pacs.http_port, "/modalities/edge/store", uploaded["ID"].encode())
        assert sent["InstancesCount"] == 1 and sent["FailedInstancesCount"] == 0
        [series] = listener.queue.series_summary()
        assert series["instances"] == 1
        assert CliRunner().invoke(cli, ["echo", pacs.address]).exit_code == 0
        result = CliRunner().invoke(cli, ["send", pacs.address, get_testdata_file("MR_small.dcm")])
        assert result.exit_code == 0 and "1 of 1 stored" in result.output
