"""edgeimg plugin: Conditional GAN for low-dose to normal-dose enhancement.

Importing this module is cheap: it only declares ModelSpecs.
The network lives in edgeimg_gan.model, imported on demand.
"""

from edgeimg.sdk import InputSpec, ModelSpec, hookimpl

SDK_REQUIRES = ">=1,<2"


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="gan",
            version="0.1.0",
            task="enhance",
            summary="Conditional GAN generator: low-dose to normal-dose",
            implementation="edgeimg_gan.model:GANModel",
            weights="weights/gan.safetensors",
            input=InputSpec(size=(512, 512)),
            outputs=("derived", "json"),
            metric="psnr",
            tolerance=0.3,
        )
    )
