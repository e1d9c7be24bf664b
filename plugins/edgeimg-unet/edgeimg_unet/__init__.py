"""edgeimg plugin: U-Net lesion segmentation.

Importing this module is cheap: it only declares ModelSpecs.
The network lives in edgeimg_unet.model, imported on demand.
"""

from edgeimg.sdk import InputSpec, ModelSpec, hookimpl

SDK_REQUIRES = ">=1,<2"


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="unet",
            version="0.1.0",
            task="segment",
            summary="U-Net lesion segmentation",
            implementation="edgeimg_unet.model:UNetModel",
            weights="weights/unet.safetensors",
            input=InputSpec(size=(96, 96)),
            outputs=("seg", "json"),
            metric="dice",
            tolerance=0.01,
        )
    )
