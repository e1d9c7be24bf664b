"""ModelSpec: what a model plugin declares, cheap to build and list.

A spec names its implementation as "module:attribute" strings so that listing models never
imports torch; `ModelSpec.load()` imports the implementation on demand.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"

TASKS = ("classify", "series-classify", "segment", "detect", "enhance", "anomaly")


@dataclass(frozen=True)
class Code:
    """A coded concept (SNOMED CT, DCM, ...) used in SR and SEG output."""

    value: str
    scheme: str
    meaning: str

    def as_dict(self) -> dict[str, str]:
        return {"value": self.value, "scheme": self.scheme, "meaning": self.meaning}


LESION = Code("52988006", "SCT", "Lesion")


@dataclass(frozen=True)
class InputSpec:
    """Input geometry and intensity handling: modality LUT, then window, then resize."""

    size: tuple[int, int] = (128, 128)
    channels: int = 1
    window_center: float = 40.0
    window_width: float = 400.0
    modality_lut: bool = True
    sequence: bool = False
    min_length: int = 1
    max_length: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "window": [self.window_center, self.window_width],
            "modality_lut": self.modality_lut,
            "sequence": self.sequence,
            "length": [self.min_length, self.max_length],
        }


@dataclass(frozen=True)
class ModelSpec:
    """A model a plugin offers: metadata here, network and data behind `implementation`."""

    name: str
    version: str
    task: str
    summary: str
    implementation: str
    weights: str | None = None
    input: InputSpec = field(default_factory=InputSpec)
    modalities: tuple[str, ...] = ("CT",)
    sop_classes: tuple[str, ...] = (
        CT_IMAGE_STORAGE,
        ENHANCED_CT_IMAGE_STORAGE,
        LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
    )
    labels: tuple[Code, ...] = (LESION,)
    outputs: tuple[str, ...] = ()  # writers to run; none named: the task's default writers
    metric: str = ""
    #: the largest drop of `metric` (engine vs torch FP32 on held-out data) an engine may show
    tolerance: float = 0.01
    #: False for error metrics (MAE): a rise, not a fall, is then the drop
    higher_is_better: bool = True
    clinical_use: bool = False
    plugin: str = ""
    #: how many prior studies of the same patient and modality (most recent first) `serve`
    #: fetches before a job runs, for `ModelImplementation.compare`; 0: none
    priors: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task {self.task!r} is not one of {TASKS}")
        if ":" not in self.implementation:
            raise ValueError(
                f"model {self.name!r}: implementation must be 'module:attribute', "
                f"got {self.implementation!r}"
            )
        if isinstance(self.priors, bool) or not isinstance(self.priors, int) or self.priors < 0:
            raise ValueError(f"model {self.name!r}: priors must be a whole number >= 0")

    def load(self) -> Any:
        """Import and return the implementation object (this is where torch gets imported)."""
        module_name, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    def weights_path(self) -> Path | None:
        """The shipped weights file, resolved relative to the implementation's package."""
        if self.weights is None:
            return None
        path = Path(self.weights)
        if path.is_absolute():
            return path
        package = self.implementation.partition(":")[0].split(".")[0]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            return path
        return Path(spec.origin).parent / path

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "summary": self.summary,
            "plugin": self.plugin,
            "modalities": list(self.modalities),
            "sop_classes": list(self.sop_classes),
            "input": self.input.as_dict(),
            "labels": [code.as_dict() for code in self.labels],
            "outputs": list(self.outputs),
            "metric": self.metric,
            "tolerance": self.tolerance,
            "higher_is_better": self.higher_is_better,
            "weights": self.weights,
            "clinical_use": self.clinical_use,
            "priors": self.priors,
        }
