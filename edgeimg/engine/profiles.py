"""Shape profiles: the (min, opt, max) shape of every input an engine must accept.

Axes named "batch" in the implementation's dynamic_axes range over 1..max_batch; any other named
axis is the sequence (slice or frame) axis and ranges over the spec's length range. Static axes
keep the size of the example input. TensorRT builds one optimization profile from these; the
other backends record them in the manifest and the cache key.
"""

from __future__ import annotations

from typing import Any

from edgeimg.backends.base import Profiles

#: the batch an engine takes when nobody asks for more; a bigger `run --batch` gets its own
MAX_BATCH = 8


def axis_range(axis_name: str, spec: Any, max_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) for one dynamic axis; opt is where TensorRT tunes its kernels."""
    if axis_name == "batch":
        return 1, max_batch, max_batch
    low, high = spec.input.min_length, max(spec.input.min_length, spec.input.max_length)
    return low, (low + high + 1) // 2, high


def shape_profiles(impl: Any, max_batch: int) -> Profiles:
    """The profile for each of the implementation's inputs."""
    if max_batch < 1:
        raise ValueError(f"max batch must be at least 1, got {max_batch}")
    examples = impl.example_inputs(1)
    profiles: Profiles = {}
    for name, example in zip(impl.input_names, examples, strict=True):
        axes = impl.dynamic_axes.get(name, {})
        shapes: list[list[int]] = [list(example.shape), list(example.shape), list(example.shape)]
        for axis, axis_name in axes.items():
            for shape, size in zip(
                shapes, axis_range(axis_name, impl.spec, max_batch), strict=True
            ):
                shape[axis] = size
        profiles[name] = (tuple(shapes[0]), tuple(shapes[1]), tuple(shapes[2]))
    return profiles
