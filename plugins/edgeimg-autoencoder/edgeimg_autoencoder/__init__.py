"""edgeimg plugin: Denoising autoencoder: enhancement, anomaly score, features.

Importing this module is cheap: it only declares ModelSpecs.
The network lives in edgeimg_autoencoder.model, imported on demand.
"""

from edgeimg.sdk import InputSpec, ModelSpec, hookimpl

SDK_REQUIRES = ">=1,<2"


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="autoencoder",
            version="0.1.0",
            task="enhance",
            summary="Denoising autoencoder; anomaly score and per-slice embedding",
            implementation="edgeimg_autoencoder.model:AutoencoderModel",
            weights="weights/autoencoder.safetensors",
            input=InputSpec(size=(512, 512)),
            outputs=("derived", "json"),
            metric="psnr",
            tolerance=0.3,
        )
    )
