"""Per-task parts of a scaffolded plugin: the spec's fields, the SDK base class and a network.

Each network is deliberately small (it trains in seconds on a CPU) and exports to ONNX with a
dynamic batch axis; the base class supplies data, loss, metrics and postprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """What `edgeimg plugin new --task` varies."""

    spec_task: str
    base: str
    summary: str
    input: str
    outputs: str
    metric: str
    sizes: str
    network: str
    forward_shape: str


_CONV = """

def conv(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )
"""

CLASSIFY = Task(
    spec_task="classify",
    base="SliceClassifier",
    summary="Slice classifier: lesion present, with probability",
    input="sdk.InputSpec(size=(64, 64))",
    outputs='("sr", "json")',
    metric="auc",
    sizes="train_size, val_size, heldout_size = 512, 64, 64",
    forward_shape="(batch, 1)",
    network=_CONV
    + '''

class Network(nn.Module):
    """Three strided conv blocks, then global max and mean pooling to one logit."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv(1, width, 2),
            conv(width, width * 2, 2),
            conv(width * 2, width * 4, 2),
        )
        self.head = nn.Linear(width * 8, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.features(image)
        pooled = torch.cat([features.amax(dim=(2, 3)), features.mean(dim=(2, 3))], dim=1)
        return self.head(pooled)
''',
)

SEGMENT = Task(
    spec_task="segment",
    base="Segmenter",
    summary="Lesion segmentation, written as DICOM SEG",
    input="sdk.InputSpec(size=(64, 64))",
    outputs='("seg", "json")',
    metric="dice",
    sizes="train_size, val_size, heldout_size = 512, 64, 64",
    forward_shape="(batch, 1, 64, 64)",
    network=_CONV
    + '''

class Network(nn.Module):
    """A two-level U-Net: sides must be multiples of 4."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.down1 = conv(1, width)
        self.down2 = conv(width, width * 2, 2)
        self.bottom = conv(width * 2, width * 4, 2)
        self.up2 = nn.ConvTranspose2d(width * 4, width * 2, 2, stride=2)
        self.merge2 = conv(width * 4, width * 2)
        self.up1 = nn.ConvTranspose2d(width * 2, width, 2, stride=2)
        self.merge1 = conv(width * 2, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skip1 = self.down1(image)
        skip2 = self.down2(skip1)
        x = self.bottom(skip2)
        x = self.merge2(torch.cat([self.up2(x), skip2], dim=1))
        x = self.merge1(torch.cat([self.up1(x), skip1], dim=1))
        return self.head(x)
''',
)

DETECT = Task(
    spec_task="detect",
    base="Detector",
    summary="Lesion boxes with scores, written as SR",
    input="sdk.InputSpec(size=(64, 64))",
    outputs='("sr", "json")',
    metric="map50",
    sizes="train_size, val_size, heldout_size = 512, 64, 64",
    forward_shape="(batch, 5, 32, 32)",
    network=_CONV
    + '''

class Network(nn.Module):
    """Stride-2 maps (sdk.STRIDE): heatmap logit, centre offset x/y, log box width/height."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(1, width, 2), conv(width, width * 2), conv(width * 2, width * 2)
        )
        self.heatmap = nn.Conv2d(width * 2, 1, 1)
        self.boxes = nn.Conv2d(width * 2, 4, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # prior probability 0.1 per cell

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.body(image)
        return torch.cat([self.heatmap(features), self.boxes(features)], dim=1)
''',
)

SEQUENCE = Task(
    spec_task="series-classify",
    base="SequenceClassifier",
    summary="Series classifier: a lesion that persists over slices",
    input="sdk.InputSpec(size=(32, 32), sequence=True, min_length=8, max_length=24)",
    outputs='("sr", "json")',
    metric="accuracy",
    sizes="train_series, validation_series, heldout_series = 256, 64, 64",
    forward_shape="(batch,)",
    network=_CONV
    + '''

class Network(nn.Module):
    """A per-slice CNN encoder, then a GRU over the slice axis, max-pooled over real slices.

    Input (N, L, 1, H, W); shorter series end in sdk.PAD slices, which the pooling masks. Outputs
    the series logit (N,) and per-slice logits (N, L) from the encoder alone (an auxiliary
    target that trains the encoder quickly).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            conv(1, width, 2), conv(width, width * 2, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.slice_head = nn.Linear(width * 2, 1)
        self.gru = nn.GRU(width * 2, width * 2, batch_first=True)
        self.head = nn.Linear(width * 2, 1)

    def forward(self, series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(series.shape[1], device=series.device).unsqueeze(0)
        valid = steps < sdk.real_lengths(series).unsqueeze(1)
        features = self.encoder(series.flatten(0, 1)).reshape(*series.shape[:2], -1)
        states = self.gru(features)[0]
        pooled = states.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)
        return self.head(pooled).squeeze(-1), self.slice_head(features).squeeze(-1)
''',
)

ENHANCE = Task(
    spec_task="enhance",
    base="Enhancer",
    summary="Denoised slices, written as a derived image series",
    input="sdk.InputSpec(size=(64, 64))",
    outputs='("derived", "json")',
    metric="psnr",
    sizes="train_slices, validation_slices, heldout_slices = 128, 16, 32\n    patch = 32",
    forward_shape="(batch, 1, 64, 64)",
    network='''

class Network(nn.Module):
    """Residual denoiser: the input plus a learned correction, fully convolutional."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 3, padding=1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image + self.body(image)
''',
)

TASKS = {
    "classify": CLASSIFY,
    "segment": SEGMENT,
    "detect": DETECT,
    "sequence": SEQUENCE,
    "enhance": ENHANCE,
}
