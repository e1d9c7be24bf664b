"""Result writers: each turns one kind of model result into output files.

Writers are plugins: the built-in ones (SR, SEG, derived images, JSON) are registered here, as a
default plugin, through the same `register_writers` hook a third-party package uses, and a model's
`ModelSpec.outputs` names the ones that run (a default per task when it names none). A writer
declares what it accepts (result kinds, `edgeimg.writers.items`) and what it produces (DICOM
objects, which are gated and forwarded, or other files); its function is imported only when it
runs, in whichever process writes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeimg import hookimpl
from edgeimg.errors import EdgeimgError, internal_error
from edgeimg.plugins import PluginError, UnknownName
from edgeimg.writers.items import Item, kind_of

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from edgeimg.sdk.model import ModelSpec

#: what a writer's files are: DICOM objects (gated, listed as outputs, forwarded) or other files
PRODUCES = ("dicom", "file")
#: the writers a model runs when its spec names none
DEFAULT_OUTPUTS: dict[str, tuple[str, ...]] = {
    "classify": ("sr", "json"),
    "series-classify": ("sr", "json"),
    "detect": ("sr", "json"),
    "segment": ("seg", "json"),
    "enhance": ("derived", "json"),
    "anomaly": ("derived", "json"),
}


@dataclass(frozen=True)
class Writer:
    """A writer: its name (`kind`, what ModelSpec.outputs says), the "module:function" that
    writes, the result kinds it accepts (empty: any) and what it produces."""

    kind: str
    summary: str
    function: str
    accepts: tuple[str, ...] = ()
    produces: str = "dicom"

    def __post_init__(self) -> None:
        if self.produces not in PRODUCES:
            raise ValueError(f"writer {self.kind!r}: produces must be one of {PRODUCES}")
        if ":" not in self.function:
            raise ValueError(f"writer {self.kind!r}: function must be 'module:function'")

    def takes(self, task: str) -> bool:
        """Whether this writer accepts the results of a model of `task`."""
        return not self.accepts or kind_of(task) in self.accepts

    def load(self) -> Callable[[SeriesOutput, Path], list[Path]]:
        module_name, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "summary": self.summary,
            "function": self.function,
            "accepts": list(self.accepts),
            "produces": self.produces,
        }


@dataclass(frozen=True)
class Frame:
    """One frame a per-slice result lies on: its file's header, its 1-based number in a
    multi-frame file (None for a single-frame one) and the file's pixel size."""

    header: Dataset
    number: int | None
    rows: int
    columns: int

    @property
    def reference(self) -> dict[str, Any]:
        """How a finding names its image: the SOP Instance UID, and the frame when many."""
        found: dict[str, Any] = {"sop_instance_uid": str(self.header.SOPInstanceUID)}
        if self.number is not None:
            found["frame"] = self.number
        return found


@dataclass(frozen=True)
class SeriesOutput:
    """Everything one series gives its writers: who made the results, the sources (one header
    per file), one Frame per per-slice result, and the typed results themselves."""

    spec: ModelSpec
    engine_key: str
    sources: tuple[Dataset, ...]
    frames: tuple[Frame, ...]
    items: tuple[Item, ...]
    predecessors: tuple[Dataset, ...] = ()  # earlier SRs a revised result supersedes
    other_evidence: tuple[Dataset, ...] = ()  # prior studies the model compared with

    @property
    def identity(self) -> dict[str, Any]:
        """What the DICOM authors (`edgeimg.dicom.sr` ...) are told about the producer."""
        return {"model": self.spec, "engine_key": self.engine_key}


@dataclass
class Written:
    """What the writers of one series wrote: DICOM objects (to list and forward) and files."""

    objects: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


class WriterMismatch(PluginError, EdgeimgError):
    """A model names a writer no plugin registered, or one that does not take its results: the
    installed plugins cannot be used together (`run` exits 1, a `serve` job fails, in words)."""


def choose(spec: ModelSpec, registry: Any) -> tuple[Writer, ...]:
    """The writers `spec` runs, from `registry`; a name no plugin registered, or a writer that
    does not take the model's results, is a WriterMismatch before any series is read."""
    names = spec.outputs or DEFAULT_OUTPUTS[spec.task]
    chosen = []
    for name in names:
        try:
            writer = registry.writer(name)
        except UnknownName as error:
            raise WriterMismatch(f"model {spec.name!r} asks for an {error}") from None
        if not writer.takes(spec.task):
            raise WriterMismatch(
                f"model {spec.name!r} asks for writer {name!r}, which accepts "
                f"{', '.join(writer.accepts)}, not the {kind_of(spec.task)} results of a "
                f"{spec.task} model"
            )
        chosen.append(writer)
    return tuple(chosen)


def write_series(writers: Sequence[Writer], output: SeriesOutput, out_dir: Path) -> Written:
    """Run each writer on one series, in order; any failure is the series' failure, in our
    words (a library's text may quote source values; ours never does)."""
    written = Written()
    for writer in writers:
        try:
            paths = writer.load()(output, Path(out_dir))
        except EdgeimgError:
            raise
        except Exception as error:
            from edgeimg.dicom.write import OutputRefused

            doing = f"writing the {writer.kind} outputs"
            raise OutputRefused(internal_error(error, doing)) from None
        target = written.objects if writer.produces == "dicom" else written.files
        target.extend(str(path) for path in paths)
    return written


BUILT_IN = (
    Writer(
        "json",
        "One JSON document per series: model, engine, source UIDs and every result",
        "edgeimg.writers.builtin:write_json",
        produces="file",
    ),
    Writer(
        "sr",
        "TID 1500 Comprehensive 3D SR of findings (one per series)",
        "edgeimg.writers.builtin:write_sr",
        accepts=("slice-finding", "series-finding", "detections"),
    ),
    Writer(
        "seg",
        "DICOM SEG (binary) of segment masks, on the source geometry",
        "edgeimg.writers.builtin:write_seg",
        accepts=("mask",),
    ),
    Writer(
        "derived",
        "Derived images of the source's SOP class, in HU, in a new series",
        "edgeimg.writers.builtin:write_derived",
        accepts=("image",),
    ),
)


@hookimpl
def register_writers(register: Callable[[Writer], None]) -> None:
    for writer in BUILT_IN:
        register(writer)
