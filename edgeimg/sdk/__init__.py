"""The edgeimg plugin SDK: everything a model plugin imports from edgeimg, in one place.

    from edgeimg import sdk

    @sdk.hookimpl
    def register_models(register):
        register(sdk.ModelSpec(name="tiny", task="classify", implementation="tiny.model:Tiny", ...))

Importing `edgeimg.sdk` is cheap (no torch): the spec names here load eagerly, and the task base
classes and data helpers load on first attribute access, so `edgeimg plugins` and `edgeimg
models` never import a plugin's network code.

Task base classes (each provides every method but `build()`):

=========================  ===================  ==========================================
ModelSpec task             base class           network output
=========================  ===================  ==========================================
classify                   SliceClassifier      logit (N, 1)
segment                    Segmenter            mask_logit (N, 1, H, W)
detect                     Detector             maps (N, 5, H/STRIDE, W/STRIDE)
series-classify            SequenceClassifier   logit (N,), slice_logits (N, L)
enhance, anomaly           Enhancer             enhanced (N, 1, H, W)
=========================  ===================  ==========================================

Which command calls which method: `build` every command; `datasets`, `loss` (and `metrics` when
the spec names a metric) `train`; `heldout` and `metrics` `evaluate` and `build-engine`
(verification; `run` and `serve` build engines on demand); `example_inputs` `build-engine`;
`postprocess` `run` and `serve`. A method left out is a one-line ContractError naming the
method, the command and the base class that provides it.

Backends and writers are plugins too: subclass `Backend` and register it with
`register_backends`; register a `Writer` with `register_writers`.

A plugin declares the SDK versions it was written for as `SDK_REQUIRES = ">=1,<2"` in the module
its entry point names; edgeimg refuses a plugin whose range excludes SDK_VERSION.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgeimg import hookimpl
from edgeimg.sdk.implementation import (
    NEEDED_BY,
    TASK_BASES,
    ContractError,
    ModelImplementation,
)
from edgeimg.sdk.model import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
    LESION,
    TASKS,
    Code,
    InputSpec,
    ModelSpec,
)

SDK_VERSION = "1.0"
"""The plugin SDK's version: the major number changes when a plugin written for it may break."""

#: names loaded on first access, by module (they import torch or pydicom)
_LAZY = {
    "edgeimg.sdk.classify": ("SliceClassifier",),
    "edgeimg.sdk.segment": ("Segmenter",),
    "edgeimg.sdk.detect": ("Detector", "STRIDE", "MAX_BOXES", "decode"),
    "edgeimg.sdk.sequence": (
        "SequenceClassifier",
        "SeriesDataset",
        "PAD",
        "IGNORE",
        "real_lengths",
    ),
    "edgeimg.sdk.enhance": ("Enhancer",),
    "edgeimg.sdk.slices": ("SliceModel",),
    "edgeimg.sdk.enhance_data": ("EnhancementModel", "EnhancementPairs"),
    "edgeimg.sdk.datasets": (
        "DataError",
        "SliceData",
        "synthetic",
        "split",
        "window",
        "class_folders",
        "segmentation_folder",
    ),
    "edgeimg.sdk.metrics": (
        "auc",
        "accuracy",
        "dice",
        "box_iou",
        "nms",
        "detection_scores",
        "sigmoid",
    ),
    "edgeimg.sdk.metrics_image": ("psnr", "ssim", "enhancement_metrics"),
    "edgeimg.synth": ("make_phantom", "make_slices", "low_dose"),
    "edgeimg.sdk.training": ("predict", "save_checkpoint", "train", "evaluate"),
    "edgeimg.backends.base": ("Backend", "BackendUnavailable", "CompileJob", "Runner"),
    "edgeimg.writers": ("Writer", "SeriesOutput", "Frame"),
    "edgeimg.writers.items": ("SliceFinding", "SeriesFinding", "Detections", "Mask", "Image"),
    "edgeimg.dicom.write": ("MANUFACTURER", "check_sources", "prepare", "save"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE",
    "LESION",
    "NEEDED_BY",
    "SDK_VERSION",
    "TASKS",
    "TASK_BASES",
    "Code",
    "ContractError",
    "InputSpec",
    "ModelImplementation",
    "ModelSpec",
    "hookimpl",
    *_WHERE,
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeimg.sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
