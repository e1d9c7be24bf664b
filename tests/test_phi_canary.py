"""The PHI canary: marker strings in every identifying attribute, through every way in and every
command, and not one of them in any byte edgeimg writes outside the DICOM objects themselves."""

from __future__ import annotations

import shutil

import pytest

from testsupport.canary import TOKEN, exercise, make_studies, needles, search
from testsupport.pacs import Orthanc
from testsupport.peers import needs_dcmtk


def test_needles_cover_every_marker_and_form() -> None:
    forms = needles()
    assert b"PHIQZ" in forms and b"PHIQZlatPN" in forms and b"PHIQZjisRP" in forms
    assert "Müller".encode("latin-1") in forms and "Müller".encode() in forms
    assert b"M\\u00fcller" in forms  # as json.dumps writes it
    assert "山田".encode("iso2022_jp") in forms and b"19320229" in forms


def test_search_finds_a_planted_marker_and_skips_dicom(tmp_path) -> None:
    """The search can fail: a marker in a log, a SQLite row or a PNG text chunk is a hit."""
    import sqlite3

    from PIL import Image, PngImagePlugin

    studies = make_studies(tmp_path / "in", slices=4, size=32)
    assert all(TOKEN.encode() in p.read_bytes() for p in studies["utf"].glob("*.dcm"))
    (tmp_path / "serve.log").write_text('{"event": "x", "error": "Zo\\u00eb"}\n')
    with sqlite3.connect(tmp_path / "q.sqlite") as db:
        db.execute("CREATE TABLE jobs (error TEXT)")
        db.execute("INSERT INTO jobs VALUES ('ValueError: PHIQZutfAN')")
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "PHIQZlatSD crâne", zip=True)
    Image.new("L", (4, 4)).save(tmp_path / "preview.png", pnginfo=text)
    found = search([tmp_path], {"stderr": "Кардио".encode()})
    hit_files = {hit.split(": ")[0] for hit in found.hits}
    assert {str(tmp_path / "serve.log"), "stderr", f"{tmp_path / 'q.sqlite'} (dump)"} <= hit_files
    assert f"{tmp_path / 'preview.png'} (text chunks)" in hit_files
    assert found.dicom_skipped == 12 and found.files >= 5


@pytest.mark.integration
@needs_dcmtk
@pytest.mark.skipif(Orthanc.available() is not None, reason=str(Orthanc.available()))
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")
def test_no_marker_outside_the_dicom_objects(tmp_path, tmp_path_factory) -> None:
    run, found = exercise(tmp_path / "work", tmp_path_factory.mktemp("engines"))
    print(
        f"PHI canary: searched {found.bytes} bytes in {found.files} files and outputs "
        f"({found.dicom_skipped} DICOM objects left out); {run.counts}"
    )
    assert found.hits == []
    unexpected = {
        name: code
        for name, code in run.codes.items()
        if code not in (0, 1) and not name.startswith("storescu")
    }
    assert unexpected == {}  # every command ran (1: the bad files are reported as errors)
    assert run.codes["serve tls"] == run.codes["serve plain"] == 0
    assert run.counts["previews"] > 0  # their PNG text chunks were searched
    assert run.counts["spooled with markers"] >= 3 * 8  # the markers did go through serve
    assert run.counts["results at the PACS"] > 0
    assert run.counts["servers with their own engine store"] == 0  # they used those built first
    serve_log = (tmp_path / "work" / "serve-tls" / "serve.log").read_text()
    assert '"event": "library_warning"' in serve_log  # library text was there to be scrubbed
