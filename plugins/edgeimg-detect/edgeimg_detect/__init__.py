"""edgeimg plugin: Anchor-free lesion detector.

Importing this module is cheap: it only declares ModelSpecs.
The network lives in edgeimg_detect.model, imported on demand.
"""

from edgeimg.sdk import InputSpec, ModelSpec, hookimpl

SDK_REQUIRES = ">=1,<2"


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="detector",
            version="0.1.0",
            task="detect",
            summary="Anchor-free lesion detector: centre heatmap and box size",
            implementation="edgeimg_detect.model:DetectorModel",
            weights="weights/detector.safetensors",
            input=InputSpec(size=(96, 96)),
            outputs=("sr", "json"),
            metric="map50",
            tolerance=0.01,
        )
    )
