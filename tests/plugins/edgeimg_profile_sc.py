"""A third party's writer, for the tests: the per-slice probability profile of a slice
classifier as a Secondary Capture image (highdicom), installed through an entry point.

It imports only the SDK, as a plugin must: the `register_writers` hook, the typed items, and the
helpers that give an output its identity and gate and save it.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np

from edgeimg import sdk

BAR_WIDTH, HEIGHT = 4, 64


def write_profile(output: sdk.SeriesOutput, out_dir: Path) -> list[Path]:
    """One 8-bit image: a bar per slice, as tall as its probability."""
    sources = sdk.check_sources(list(output.sources), one_series=True)
    identity = sdk.prepare(
        "profile", "profile", sources, output.spec, output.engine_key, series_offset=6000
    )
    probabilities = [
        item.probability for item in output.items if isinstance(item, sdk.SliceFinding)
    ]
    pixels = np.zeros((HEIGHT, BAR_WIDTH * len(probabilities)), dtype=np.uint8)
    for index, probability in enumerate(probabilities):
        height = round(probability * HEIGHT)
        pixels[HEIGHT - height :, index * BAR_WIDTH : (index + 1) * BAR_WIDTH - 1] = 255
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=sources[0],
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=identity.uids.series,
        series_number=identity.series_number,
        sop_instance_uid=identity.uids.instance(),
        instance_number=1,
        manufacturer=sdk.MANUFACTURER,
        patient_orientation=("L", "F"),
        series_description=identity.series_description,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    if "Laterality" not in image:  # Type 2C: the profile cannot rule out a paired organ
        image.Laterality = None
    return [sdk.save(image, out_dir, sources)]


@sdk.hookimpl
def register_writers(register):
    register(
        sdk.Writer(
            "profile-sc",
            "Slice probability profile as a Secondary Capture image",
            "edgeimg_profile_sc:write_profile",
            accepts=("slice-finding",),
        )
    )


@sdk.hookimpl
def register_models(register):
    """The cnn classifier, shipped weights and all, with this plugin's writer among its outputs:
    how a site picks a third party's writer for a model it already runs."""
    register(
        sdk.ModelSpec(
            name="cnn-profile",
            version="0.1.0",
            task="classify",
            summary="cnn, with the slice probability profile as a Secondary Capture",
            implementation="edgeimg_cnn.model:CNNModel",
            weights="weights/cnn.safetensors",
            input=sdk.InputSpec(size=(96, 96)),
            outputs=("sr", "profile-sc", "json"),
        )
    )
