"""The PHI canary: studies whose identifying attributes carry marker strings, and a search for
those markers in every byte edgeimg writes outside the DICOM objects themselves.

Used by tests/test_phi_canary.py (short form) and benchmarks/reliability/phi.py (soak).
A marker is an ASCII token (`PHIQZ` + study + attribute) plus, for the non-ASCII character sets,
words in that set; each is searched for as UTF-8, Latin-1, ISO 2022 JP, JSON and Python escapes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread

from edgeimg.serve.spool import QUEUE_NAME
from edgeimg.synth.dicom import write_study
from testsupport.pacs import Orthanc
from testsupport.peers import ROOT, free_port, orthanc_rest, self_signed, start_serve, stop

TOKEN = "PHIQZ"

#: per study: its Specific Character Set and the identifying attributes with their markers;
#: names with and without `^`, free text with spaces, in Latin-1, UTF-8 and ISO 2022 IR 87
STUDIES: dict[str, dict[str, object]] = {
    "lat": {
        "SpecificCharacterSet": "ISO_IR 100",
        "PatientName": "PHIQZlatPN Müller",
        "PatientID": "PHIQZlatID",
        "OtherPatientIDs": "PHIQZlatOI",
        "PatientBirthDate": "19320229",
        "AccessionNumber": "PHIQZlatAN",
        "ReferringPhysicianName": "PHIQZlatRP Fréchette",
        "PerformingPhysicianName": "PHIQZlatPP^Åsa",
        "OperatorsName": "PHIQZlatOP",
        "InstitutionName": "PHIQZlatIN Hôpital Élie",
        "InstitutionAddress": "PHIQZlatIA rue Lévis",
        "StudyDescription": "PHIQZlatSD crâne",
        "SeriesDescription": "PHIQZlatSE thorax",
        "ImageComments": "PHIQZlatIC patient said 'hello'",
    },
    "utf": {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientName": "PHIQZutfPN^Zoë=张^伟",
        "PatientID": "PHIQZutfID",
        "AccessionNumber": "PHIQZutfAN",
        "ReferringPhysicianName": "PHIQZutfRP Ørsted",
        "PerformingPhysicianName": "PHIQZutfPP^Łukasz",
        "InstitutionName": "PHIQZutfIN Klinikum Köln",
        "StudyDescription": "PHIQZutfSD Кардио",
        "SeriesDescription": "PHIQZutfSE 頭部",
        "PatientComments": 'PHIQZutfCM "quoted" remark',
    },
    "jis": {
        "SpecificCharacterSet": ["", "ISO 2022 IR 87"],
        "PatientName": "PHIQZjisPN^Taro=山田^太郎=やまだ^たろう",
        "PatientID": "PHIQZjisID",
        "AccessionNumber": "PHIQZjisAN",
        "ReferringPhysicianName": "PHIQZjisRP=鈴木",
        "InstitutionName": "PHIQZjisIN",
        "StudyDescription": "PHIQZjisSD",
    },
}
#: a birth date is a marker too, but only its distinctive form (8 digits occur in binary files)
_DATES = {"19320229"}


def make_studies(root: Path, slices: int = 8, size: int = 64) -> dict[str, Path]:
    """One synthetic series per study in STUDIES, its headers rewritten with the markers."""
    folders = {}
    for seed, (name, attributes) in enumerate(STUDIES.items(), start=1):
        study = write_study(root / name, series=1, slices=slices, size=size, seed=900 + seed)
        for path in sorted(study.out_dir.rglob("*.dcm")):
            ds = dcmread(path)
            for keyword, value in attributes.items():
                setattr(ds, keyword, value)
            ds.save_as(path, enforce_file_format=True)
        (root / name / "ground_truth.json").unlink(missing_ok=True)
        folders[name] = next(study.out_dir.glob("series-*"))
    return folders


def needles() -> set[bytes]:
    """Every form a marker could take in a text or binary file."""
    texts = {TOKEN}  # every ASCII marker starts with it, those of the bad files too
    for attributes in STUDIES.values():
        for keyword, value in attributes.items():
            if keyword == "SpecificCharacterSet":
                continue
            for part in str(value).replace("^", " ").replace("=", " ").split():
                if part.startswith(TOKEN) or not part.isascii() or part in _DATES:
                    texts.add(part.strip("'\""))
    forms: set[bytes] = set()
    for text in texts:
        forms.add(text.encode())
        forms.add(json.dumps(text).strip('"').encode())
        forms.add(ascii(text)[1:-1].encode())
        for codec in ("latin-1", "iso2022_jp"):
            try:
                forms.add(text.encode(codec))
            except UnicodeEncodeError:
                pass
    return {form for form in forms if len(form) >= 4}


def is_dicom(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(132)[128:] == b"DICM"


@dataclass
class Search:
    """What was searched and what was found (`hits`: 'file: needle' lines, empty when clean)."""

    files: int = 0
    bytes: int = 0
    dicom_skipped: int = 0
    hits: list[str] = field(default_factory=list)


def search(roots: list[Path], extra: dict[str, bytes] | None = None) -> Search:
    """Every file under `roots` that is not a DICOM object, plus SQLite dumps, PNG text chunks
    and the captured outputs in `extra` (name -> bytes), searched for every needle."""
    found = Search()
    forms = sorted(needles())
    blobs = dict(extra or {})
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if is_dicom(path):
                found.dicom_skipped += 1
                continue
            blobs[str(path)] = path.read_bytes()
            if path.suffix in (".sqlite", ".db") or blobs[str(path)].startswith(b"SQLite format"):
                blobs[f"{path} (dump)"] = _dump(path)
            if path.suffix == ".png":
                blobs[f"{path} (text chunks)"] = _png_text(path)
    for name, data in blobs.items():
        found.files += 1
        found.bytes += len(data)
        found.hits.extend(f"{name}: {form!r}" for form in forms if form in data)
    return found


def _dump(path: Path) -> bytes:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return "\n".join(db.iterdump()).encode()


def _png_text(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return json.dumps(getattr(image, "text", {}), ensure_ascii=False).encode()


# --- the exercise: every way in, every command, the error paths --------------------------------

#: models whose engines build in seconds, one per kind of DICOM output that copies the patient
#: and study attributes (SR, SEG); the soak runs every model, the 512 x 512 enhancers (derived
#: images) and the sequence models included
QUICK_MODELS = ("cnn", "unet")
ALL_MODELS = (*QUICK_MODELS, "detector", "gru", "rnn", "lstm", "gan", "autoencoder")
SCANNER = "SCANNER"
WAIT = 600.0


def make_bad_files(folder: Path, source: Path) -> list[Path]:
    """Files for the error paths, each carrying the markers: one cut short, one whose Series
    Instance UID and one whose Instance Number are not what their VR allows."""
    folder.mkdir(parents=True, exist_ok=True)
    first = sorted(source.glob("*.dcm"))[0]
    data = first.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) * 3 // 5])
    for name, keyword, good, bad in (
        ("bad-uid", "SeriesInstanceUID", "1.2.3.4.5.6.78", f"1.2.{TOKEN}badUI"),
        ("bad-is", "InstanceNumber", "1234567890", f"{TOKEN}badIS"),
    ):
        ds = dcmread(first)
        setattr(ds, keyword, good)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ds.SOPInstanceUID}.9"
        if keyword != "SeriesInstanceUID":  # a series of its own, not a duplicate slice
            ds.SeriesInstanceUID = f"{ds.SeriesInstanceUID}.9"
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        # pydicom will not write a bad value; the same length in its place keeps the file whole
        path.write_bytes(path.read_bytes().replace(good.encode(), bad.encode(), 1))
    return sorted(folder.glob("*.dcm"))


@dataclass
class Exercise:
    """Where a run of `exercise` happened and what came out of the commands it ran."""

    work: Path
    engines: Path
    env: dict[str, str]
    outputs: dict[str, bytes] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def command(self, name: str, *args: str, timeout: float = WAIT) -> int:
        """`args` as a user runs it; its stdout and stderr kept under `name` for the search."""
        done = subprocess.run(
            list(args), capture_output=True, env=self.env, cwd=self.work, timeout=timeout
        )
        self.outputs[f"{name} (stdout)"] = done.stdout
        self.outputs[f"{name} (stderr)"] = done.stderr
        self.codes[name] = done.returncode
        return done.returncode

    def edgeimg(self, name: str, *args: str) -> int:
        return self.command(name, sys.executable, "-m", "edgeimg", *args)

    def storescu(self, name: str, port: int, files: list[Path], *args: str) -> int:
        """dcmtk's storescu as the scanner (calling AE SCANNER unless `args` give -aet)."""
        calling = () if "-aet" in args else ("-aet", SCANNER)
        return self.command(
            name,
            "storescu",
            *calling,
            *args,
            "-aec",
            "EDGEIMG",
            "127.0.0.1",
            str(port),
            *map(str, files),
        )

    def serve(self, name: str, *args: str) -> tuple[subprocess.Popen, int, Path]:
        """`edgeimg serve` in work/name (its log: work/name/serve.log), spool in work/name/spool."""
        folder = self.work / name
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        process = start_serve(
            "--aet",
            "EDGEIMG",
            "--host",
            "127.0.0.1",
            "--spool",
            str(folder / "spool"),
            "--complete-on-release",
            *args,
            port=port,
            cwd=folder,
            env=self.env,  # the engines built up front, not a race per server
        )
        return process, port, folder / "spool"


def exercise(
    work: Path, engines: Path, models: tuple[str, ...] = QUICK_MODELS, slices: int = 8
) -> tuple[Exercise, Search]:
    """Send the canary studies every way serve takes them, run every command over them and the
    error paths, then search what was written. Needs dcmtk, Orthanc and openssl."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEIMG_ENGINES": str(engines)}
    run = Exercise(work, engines, env)
    inputs = work / "inputs"
    studies = make_studies(inputs, slices=slices)
    bad = make_bad_files(inputs / "bad", studies["lat"])
    for model in models:  # up front, so no two servers build the same engine at once
        run.edgeimg(f"build-engine {model}", "build-engine", model)
    spools = _through_serve(run, studies, bad, models)
    # a server that missed $EDGEIMG_ENGINES races its own engines (minutes per model)
    run.counts["servers with their own engine store"] = sum(1 for _ in work.glob("serve-*/engines"))
    out = str(work / "run-cnn")
    run.edgeimg("run cnn", "run", "cnn", str(inputs), "--out", out, "--preview", "--json")
    if "autoencoder" in models:
        out = str(work / "run-autoencoder")
        run.edgeimg(
            "run autoencoder",
            "run",
            "autoencoder",
            str(inputs),
            "--out",
            out,
            "--preview",
            "--features",
        )
    key = str(work / "deid.key")
    for flag in ("--json", "--clean-descriptors"):
        out = str(work / f"deid{flag}")
        run.edgeimg(f"deid {flag}", "deid", str(inputs), out, "--key-file", key, flag)
    roots = [p for p in work.iterdir() if p.is_dir() and p != inputs]
    run.counts["previews"] = sum(1 for root in roots for _ in root.rglob("*.png"))
    run.counts["spooled with markers"] = sum(
        TOKEN.encode() in p.read_bytes()
        for spool in spools
        for p in spool.rglob("*")
        if p.is_file() and is_dicom(p)
    )
    return run, search(roots, run.outputs)


def _through_serve(
    run: Exercise, studies: dict[str, Path], bad: list[Path], models: tuple[str, ...]
) -> list[Path]:
    """storescu over TLS into a serve running `models` (with a refused AE and bad files),
    Orthanc into a plain one forwarding to Orthanc and to a PACS that is down, storescu into
    one whose disk is full; then `edgeimg queue`. The spools of the first two."""
    key, cert = self_signed(run.work)
    tls = ("+tls", str(key), str(cert), "+cf", str(cert))
    allow = ("--allow", f"{SCANNER}@127.0.0.1")
    with Orthanc("PACS") as pacs:
        dead = f"DOWN@127.0.0.1:{free_port()}"
        routes = [arg for model in models for arg in ("--model", model)]
        servers = {
            "tls": run.serve(
                "serve-tls",
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
                *routes,
                "--forward",
                pacs.address,
                *allow,
            ),
            "plain": run.serve(
                "serve-plain",
                "--model",
                "cnn",
                "--forward",
                pacs.address,
                "--forward",
                dead,
                *allow,
                "--allow",
                f"{pacs.aet}@127.0.0.1",
            ),
            "full": run.serve("serve-full", "--min-free-mb", "1e12", *allow),
        }
        (_, secure, secure_spool), (_, plain, plain_spool) = servers["tls"], servers["plain"]
        try:
            for name, folder in studies.items():
                run.storescu(f"storescu tls {name}", secure, sorted(folder.glob("*.dcm")), *tls)
            for path in bad:
                run.storescu(f"storescu tls {path.name}", secure, [path], *tls)
            run.storescu("storescu refused AE", secure, bad[:1], *tls, "-aet", "INTRUDER")
            run.storescu(
                "storescu disk full", servers["full"][1], sorted(studies["utf"].glob("*.dcm"))
            )
            _orthanc_sends(pacs, plain, studies["jis"])
            bad_files = map(str, bad)
            run.edgeimg(
                "send bad", "send", f"EDGEIMG@127.0.0.1:{plain}", "--aet", SCANNER, *bad_files
            )
            run.edgeimg("send to a PACS that is down", "send", dead, str(studies["utf"]))
            _wait(secure_spool, series=len(studies), forwards_to=None)
            _wait(plain_spool, series=1, forwards_to=pacs.address)
            run.counts["results at the PACS"] = len(pacs.instances())
            for name, spool in (("tls", secure_spool), ("plain", plain_spool)):
                run.edgeimg(f"queue {name}", "queue", "--spool", str(spool))
                run.edgeimg(f"queue {name} json", "queue", "--spool", str(spool), "--json")
        finally:
            for name, (process, _, _) in servers.items():
                run.codes[f"serve {name}"] = stop(process)
    return [secure_spool, plain_spool]


def _orthanc_sends(pacs: Orthanc, port: int, folder: Path) -> None:
    """Orthanc as the sender: upload the study, then C-STORE it to serve from the REST API."""
    modality = json.dumps({"AET": "EDGEIMG", "Host": "127.0.0.1", "Port": port}).encode()
    orthanc_rest(pacs.http_port, "/modalities/edge", modality, method="PUT")
    study = ""
    for path in sorted(folder.glob("*.dcm")):
        study = orthanc_rest(pacs.http_port, "/instances", path.read_bytes())["ParentStudy"]
    orthanc_rest(pacs.http_port, "/modalities/edge/store", study.encode())


def _wait(spool: Path, series: int, forwards_to: str | None, timeout: float = WAIT) -> None:
    """Until `series` series are finished with their jobs, and their forwards (those to
    `forwards_to` when given; the others are left retrying) are sent."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT (SELECT COUNT(*) FROM series WHERE state IN ('done', 'failed')),"
        " (SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')),"
        " (SELECT COUNT(*) FROM forwards WHERE state IN ('pending', 'running')"
        "  AND (? IS NULL OR destination = ?))"
    )
    while time.monotonic() < deadline:
        if (spool / QUEUE_NAME).exists():
            with sqlite3.connect(spool / QUEUE_NAME) as db:
                finished, jobs, forwards = db.execute(query, (forwards_to, forwards_to)).fetchone()
            if finished >= series and jobs == 0 and forwards == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{spool}: series, jobs or forwards still open after {timeout} s")
