"""`edgeimg deid`: de-identify DICOM files and folders (PS3.15 Basic Profile) into a new tree."""

from __future__ import annotations

import os
import secrets
import stat
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgeimg.console import err, out, print_json, warn
from edgeimg.privacy import describe

KEY_BYTES = 32


def default_key_file() -> Path:
    """Outside any output tree, so that the key does not travel with the data it protects."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "edgeimg" / "deid.key"


def load_or_create_key(path: Path) -> tuple[bytes, bool]:
    """The key in `path` (hex), or a new random one written there with mode 0600."""
    if path.exists():
        try:
            key = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError) as error:
            raise click.ClickException(f"cannot read the key in {path}: {error}") from None
        if len(key) < 16:
            raise click.ClickException(f"the key in {path} is shorter than 16 bytes")
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warn(f"{path} can be read by other users; chmod 600 it")
        return key, False
    key = secrets.token_bytes(KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key.hex() + "\n")
    except OSError as error:
        raise click.ClickException(f"cannot create key file {path}: {error}") from None
    return key, True


@dataclass
class _Report:
    written: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    @property
    def burned_in(self) -> list[dict]:
        return [item for item in self.written if item["burned_in_risk"]]


def _inputs(source: Path) -> list[tuple[Path, Path]]:
    """(file, its folder relative to `source`) for every non-hidden file under `source`."""
    if source.is_file():
        return [(source, Path())]
    return [
        (path, path.parent.relative_to(source))
        for path in sorted(source.rglob("*"))
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(source).parts)
    ]


def _one(path: Path, target_dir: Path, options, written: dict[Path, Path]) -> dict:
    """De-identify one file; raises DicomInputError for anything that is not usable DICOM."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from edgeimg.dicom.deid import deidentify
    from edgeimg.dicom.read import DicomInputError
    from edgeimg.dicom.uids import check_uid
    from edgeimg.dicom.validate import check_dataset

    try:
        ds = dcmread(path)
    except InvalidDicomError:
        raise DicomInputError(str(path), "not a DICOM file (no 'DICM' prefix)") from None
    except Exception as error:  # pydicom raises many kinds on bad input
        raise DicomInputError(str(path), f"not readable as DICOM: {error}") from None
    if "PixelData" in ds:
        check_dataset(ds, str(path))
    result = deidentify(ds, options)
    try:
        name = check_uid(str(result.dataset.SOPInstanceUID))
    except (AttributeError, ValueError):
        raise DicomInputError(str(path), "no valid SOPInstanceUID") from None
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{name}.dcm"
    if target in written:
        raise DicomInputError(
            str(path), f"same SOP Instance UID as {written[target]}; not written twice"
        )
    written[target] = path
    temporary = target.with_suffix(".tmp")
    result.dataset.save_as(temporary, enforce_file_format=True)
    os.replace(temporary, target)
    return {
        "source": str(path),
        "output": str(target),
        "burned_in_risk": result.burned_in_risk,
        "burned_in_reason": result.burned_in_reason,
        "warnings": result.warnings,
    }


@click.command()
@click.argument("source", metavar="IN", type=click.Path(exists=True, path_type=Path))
@click.argument("destination", metavar="OUT", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="EDGEIMG_DEID_KEY_FILE",
    help="Secret key (hex) for UID mapping and pseudonyms; created (0600) if missing. "
    "Default: ~/.config/edgeimg/deid.key.",
)
@click.option("--retain-uids", is_flag=True, help="Keep UIDs (Retain UIDs Option).")
@click.option(
    "--clean-descriptors",
    is_flag=True,
    help="Keep descriptions, reduced to a vocabulary of safe words (Clean Descriptors Option).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def deid(
    source: Path,
    destination: Path,
    key_file: Path | None,
    retain_uids: bool,
    clean_descriptors: bool,
    as_json: bool,
) -> None:
    """De-identify DICOM files under IN into OUT (PS3.15 Basic Application Level Confidentiality
    Profile).

    Folders are mirrored; each file is named by its new SOP Instance UID. UIDs map through a keyed
    hash, so the same key keeps series and references together across runs. Pixel data is not
    changed: files likely to show burned-in text are flagged in the summary.
    """
    from edgeimg.dicom.deid import DeidOptions
    from edgeimg.dicom.read import DicomInputError

    source_root, destination_root = source.resolve(), destination.resolve()
    if destination_root == source_root or source_root in destination_root.parents:
        raise click.BadParameter("OUT must not be IN or inside it", param_hint="OUT")
    key_path = key_file or default_key_file()
    key, created = load_or_create_key(key_path)
    options = DeidOptions(key, retain_uids=retain_uids, clean_descriptors=clean_descriptors)
    report = _Report()
    written: dict[Path, Path] = {}
    files = [item for item in _inputs(source) if item[0].resolve() != key_path.resolve()]
    columns = (TextColumn("de-identifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        Progress(*columns, console=err, transient=True, disable=as_json) as progress,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # pydicom's per-value complaints; failures are reported
        task = progress.add_task("deid", total=len(files))
        for path, relative in files:
            try:
                report.written.append(_one(path, destination / relative, options, written))
            except DicomInputError as error:
                report.failed.append({"source": str(path), "error": error.reason})
            except Exception as error:  # a hostile file must not end the run with a traceback
                report.failed.append({"source": str(path), "error": describe(error)})
            progress.advance(task)
    _print(report, key_path, created, as_json)
    sys.exit(1 if report.failed else 0)


def _print(report: _Report, key_path: Path, created: bool, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "key_file": str(key_path),
                "key_created": created,
                "written": report.written,
                "failed": report.failed,
                "burned_in_risk": len(report.burned_in),
            }
        )
        return
    out.print(
        f"key: {escape(str(key_path))}"
        + (" [yellow](created; keep it secret)[/]" if created else ""),
        soft_wrap=True,
    )
    for item in report.burned_in:
        out.print(
            f"[yellow]burned-in risk[/] {escape(item['source'])}: "
            f"{escape(item['burned_in_reason'])}",
            soft_wrap=True,
        )
    for item in report.failed:
        out.print(
            f"[red]failed[/] {escape(item['source'])}: {escape(item['error'])}", soft_wrap=True
        )
    out.print(
        f"{len(report.written)} de-identified, {len(report.failed)} failed, "
        f"{len(report.burned_in)} flagged for possible burned-in text"
    )
