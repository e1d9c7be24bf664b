"""Conformance: every input processed into a valid object or refused by name, the batch going on.

The cases come from tests/conformance.py (sources x mutations); every case of one run shares a
folder, so one `edgeimg run MODEL` per model judges them all. Per input file the judge wants:
a row in results.jsonl; for `ok` rows, outputs with 0 dciodvfy errors that pydicom and
highdicom (`srread`, `segread`, `imread`) load; for a refusal, a message naming the mutated
attribute (or the same refusal as the unmutated source gets), except for a valid CT source and
its variants that dciodvfy still passes, which must be processed; for a duplicate SOP Instance
UID, a `duplicate` row naming the file it duplicates. No traceback, and the JSON summary
printed whatever happened; a folder with nothing to run exits 1. `make test` runs the sample,
`make fuzz` the full table (EDGEIMG_CONFORMANCE=full).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from click.testing import CliRunner

from edgeimg.cli import cli
from edgeimg.plugins import get_registry
from tests.conformance import SOURCES, Written, cases, write_cases
from tests.dciodvfy import dciodvfy_errors

FULL = os.environ.get("EDGEIMG_CONFORMANCE") == "full"
ALL_MODELS = ("cnn", "detector", "unet", "autoencoder", "gan", "rnn", "lstm", "gru")
SAMPLE_MODELS = ("cnn", "unet", "autoencoder", "lstm")
MODELS = ALL_MODELS if FULL else SAMPLE_MODELS
RUN_TIMEOUT = 1800 if FULL else 600
_UIDS = re.compile(r"\b\d+(\.\d+){2,}\b")
_READERS = {"SR": hd.sr.srread, "SEG": hd.seg.segread}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(0 if FULL else RUN_TIMEOUT + 300)]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Written:
    return write_cases(tmp_path_factory.mktemp("conformance") / "in", cases(FULL))


def run_model(
    model: str, written: Written, engines: Path, out: Path
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "edgeimg", "run", model, str(written.root)]
    command += ["--out", str(out), "--engines-dir", str(engines), "--json", "--workers", "0"]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def _rows_by_file(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        for name in [*line.get("files", []), *([line["file"]] if "file" in line else [])]:
            rows.setdefault(str(Path(name).resolve()), []).append(line)
    return rows


def _message(row: dict[str, Any]) -> str:
    return str(row.get("reason") or row.get("error") or "")


def _generic(message: str, root: Path) -> str:
    """A refusal with paths and UIDs taken out, to compare a variant's with its source's."""
    return _UIDS.sub("<uid>", re.sub(rf"{re.escape(str(root))}/[^/]+/", "", message))


def _names(keyword: str) -> tuple[str, ...]:
    """How a message may name an attribute: its keyword, or its words ("Slice Thickness")."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", keyword)
    return (keyword.lower(), words.lower())


def check_output(case_id: str, source: Path, output: Path) -> list[str]:
    """dciodvfy, pydicom and highdicom's reader on one written object."""
    where = f"{case_id}: {output.name} (from {source.name})"
    problems = [f"{where}: dciodvfy {line}" for line in dciodvfy_errors(output)]
    try:
        modality = str(pydicom.dcmread(output).get("Modality", ""))
        _READERS.get(modality, hd.imread)(output)
    except Exception as exc:
        problems.append(f"{where}: does not load: {type(exc).__name__}: {exc}")
    return problems


def _identifying(path: Path, message: str) -> list[str]:
    """Patient attributes of the input that a refusal repeats (it may name files and UIDs)."""
    header = pydicom.dcmread(path, stop_before_pixels=True)
    keywords = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")
    values = {k: str(header.get(k) or "") for k in keywords}
    return [
        k
        for k, v in values.items()
        if v and re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.])", message)
    ]


def check_row(
    case_id: str,
    path: Path,
    row: dict[str, Any],
    as_is: dict[str, str],
    root: Path,
    must_run: set[str],
) -> list[str]:
    """A refusal must say why in terms of the mutated attribute, unless the source gets it too;
    a valid source as it is must not be refused at all, and a variant dciodvfy still passes
    only where the output's own IOD needs what the variant took away (a SEG of one slice with
    an empty SliceThickness has no thickness to give its Pixel Measures), named as such."""
    status, message = row["status"], _message(row)
    where = f"{case_id}: {path.name} {status}"
    if status in ("ok", "duplicate"):
        return []
    if not message:
        return [f"{where}: refused without a reason"]
    if leaked := _identifying(path, message):
        return [f"{where}: the refusal shows {', '.join(leaked)}"]
    source_id, _, mutation = case_id.partition("--")
    keyword = mutation.rsplit("-", 1)[0]
    names_it = any(name in message.replace(case_id, "").lower() for name in _names(keyword))
    if case_id in must_run and (mutation == "as-is" or not names_it):
        return [f"{where}: a valid CT input was not processed: {message}"]
    if mutation == "as-is" or as_is.get(source_id) == _generic(message, root):
        return []
    if names_it:
        return []
    return [f"{where}: refusal does not name {keyword}: {message}"]


def check_duplicate(
    case_id: str, first: Path, twin: Path, rows: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Two files, one SOP Instance UID: one of them is a `duplicate` naming the other."""
    for path, other in ((twin, first), (first, twin)):
        for row in rows.get(str(path.resolve()), []):
            if row["status"] == "duplicate" and other.name in json.dumps(row):
                return []
    seen = {p.name: [r["status"] for r in rows.get(str(p.resolve()), [])] for p in (first, twin)}
    return [f"{case_id}: no 'duplicate' row naming {first.name} or {twin.name}; rows {seen}"]


def judge(
    written: Written, done: subprocess.CompletedProcess, out: Path, must_run: set[str]
) -> tuple[list, Counter]:
    """Every problem with one run, each naming its case and file; and the rows' statuses."""
    problems: list[str] = []
    output = done.stdout + done.stderr
    if "Traceback" in output:
        problems.append("traceback in the output:\n" + output[output.index("Traceback") :][-3000:])
    try:
        json.loads(done.stdout)
    except json.JSONDecodeError:
        problems.append(f"no JSON summary (exit {done.returncode})")
    results = out / "results.jsonl"
    if not results.is_file():
        return [*problems, f"no results.jsonl (exit {done.returncode})"], Counter()
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    found, counts = judge_rows(written, lines, {}, must_run)
    return problems + found, counts


def judge_rows(
    written: Written, lines: list[dict[str, Any]], as_is: dict[str, str], must_run: set[str]
) -> tuple[list[str], Counter]:
    """The per-file checks over results.jsonl; `as_is` collects the unmutated sources' refusals."""
    problems: list[str] = []
    rows = _rows_by_file(lines)
    root = written.root.resolve()
    for case_id, paths in written.files.items():
        if case_id.endswith("--as-is") and (first := rows.get(str(paths[0].resolve()))):
            as_is[case_id.partition("--")[0]] = _generic(_message(first[0]), root)
    checked: set[str] = set()
    for case_id, paths in written.files.items():
        if case_id.endswith("-duplicate"):
            problems += check_duplicate(case_id, paths[0], paths[-1], rows)
        for path in paths:
            found = rows.get(str(path.resolve()))
            if not found:
                problems.append(f"{case_id}: {path.name} is missing from results.jsonl")
                continue
            for row in found:
                problems += check_row(case_id, path, row, as_is, root, must_run)
                for name in row.get("outputs", []) if row["status"] == "ok" else []:
                    if name not in checked:
                        checked.add(name)
                        problems += check_output(case_id, path, Path(name))
    return problems, Counter(line["status"] for line in lines) + Counter(outputs=len(checked))


def pinpoint(
    model: str, written: Written, engines: Path, out: Path, must_run: set[str]
) -> tuple[list, Counter]:
    """After the batch died: every case on its own, in this process, naming those that kill it.

    The unmutated sources go first, so that their refusals are known when the variants come.
    """
    problems: list[str] = []
    counts: Counter = Counter()
    as_is: dict[str, str] = {}
    for case_id in sorted(written.files, key=lambda case: not case.endswith("--as-is")):
        paths = written.files[case_id]
        case_out = out / case_id
        args = ["run", model, str(paths[0].parent), "--out", str(case_out), "--json"]
        args += ["--engines-dir", str(engines), "--workers", "0"]
        done = CliRunner().invoke(cli, args)
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            error = f"{type(done.exception).__name__}: {done.exception}"
            problems.append(f"{case_id}: the run dies with {error}")
            counts["crash"] += 1
            continue
        results = case_out / "results.jsonl"
        lines = [json.loads(line) for line in results.read_text().splitlines()]
        alone = Written(written.root, {case_id: paths}, [], {})
        found, seen = judge_rows(alone, lines, as_is, must_run)
        problems += found
        counts += seen
    return problems, counts


def valid_inputs(model: str, written: Written) -> set[str]:
    """The cases the model must process: valid sources as they are and their variants that
    dciodvfy still passes, with enough frames for a sequence model."""
    spec = get_registry().model(model)
    need = spec.input.min_length if spec.input.sequence else 1
    valid = {s.id for s in SOURCES if s.valid and written.sources.get(s.id, (0, 0))[1] >= need}
    cases = written.conformant | {case for case in written.files if case.endswith("--as-is")}
    return {case for case in cases if case.partition("--")[0] in valid}


@pytest.mark.parametrize("model", MODELS)
def test_every_input_is_processed_or_refused_by_name(model, written, engines, tmp_path):
    out = tmp_path / "out"
    done = run_model(model, written, engines, out)
    must_run = valid_inputs(model, written)
    problems, counts = judge(written, done, out, must_run)
    if not (out / "results.jsonl").is_file():
        found, counts = pinpoint(model, written, engines, tmp_path / "each", must_run)
        problems += ["each case on its own:", *found]
    files = sum(len(paths) for paths in written.files.values())
    print(f"\n{model}: {len(written.files)} variants, {files} files, rows {dict(counts)}")
    assert not problems, f"{len(problems)} problem(s) for {model}:\n" + "\n".join(problems)


def test_each_mutation_does_what_its_name_says(written):
    """The generator itself: the mutated attribute is empty, gone, multi-valued or per frame
    wherever a reader would look for it, and every case has its own series."""
    from tests.conformance import MACROS, _groups

    for case_id, paths in written.files.items():
        keyword, _, kind = case_id.partition("--")[2].rpartition("-")
        if kind in ("is", "duplicate"):
            continue
        ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        top = [ds] if keyword in ds else []
        places = [*top, *(item for item in _groups(ds, keyword) if keyword in item)]
        if kind == "empty":
            assert places and all(p[keyword].is_empty for p in places), case_id
        elif kind == "absent":
            assert not places, case_id
        elif kind == "multi":
            assert places and all(p[keyword].VM > 1 for p in places), case_id
        elif kind == "perframe":
            shared = ds.get("SharedFunctionalGroupsSequence") or [{}]
            assert keyword not in ds and MACROS[keyword] not in shared[0], case_id
            assert all(
                keyword in frame[MACROS[keyword]][0]
                for frame in ds.PerFrameFunctionalGroupsSequence
            ), case_id
    series = {
        pydicom.dcmread(p[0], stop_before_pixels=True).SeriesInstanceUID
        for p in written.files.values()
    }
    assert len(series) == len(written.files)


def test_the_judge_wants_the_attribute_named_and_nothing_identifying(written):
    path = written.files["pydicom-CT_small--SliceThickness-empty"][0]
    root = written.root.resolve()
    row = {"status": "error", "files": [str(path)], "error": f"{path}: cannot write the SR"}
    assert check_row("pydicom-CT_small--SliceThickness-empty", path, row, {}, root, set())
    row["error"] = f"{path}: SliceThickness is empty; the SEG needs it"
    assert not check_row("pydicom-CT_small--SliceThickness-empty", path, row, {}, root, set())
    patient = str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)
    row["error"] += f" (patient {patient})"
    assert check_row("pydicom-CT_small--SliceThickness-empty", path, row, {}, root, set())
    valid = {"pydicom-CT_small--SliceThickness-empty"}
    assert check_row("pydicom-CT_small--SliceThickness-empty", path, row, {}, root, valid)


@pytest.mark.parametrize("content", ["empty", "no-dicom"])
def test_a_folder_with_nothing_to_run_is_an_error_that_says_what_it_found(
    content, engines, tmp_path
):
    """Issue 14, case 6: exit 1, no traceback, and every file that was there in results.jsonl."""
    folder = tmp_path / "in"
    folder.mkdir()
    if content == "no-dicom":
        (folder / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    done = run_model("cnn", Written(folder, {}, [], {}), engines, out)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    json.loads(done.stdout)
    if content == "no-dicom":
        rows = _rows_by_file([json.loads(line) for line in (out / "results.jsonl").open()])
        assert str((folder / "notes.txt").resolve()) in rows
