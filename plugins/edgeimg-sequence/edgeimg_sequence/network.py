"""Series classifier: a per-slice CNN encoder, then a recurrent cell over the slice axis.

One input tensor (batch, sequence, 1, H, W) so the ONNX graph has a dynamic batch and sequence
axis and nothing else. Shorter series in a batch are padded at the end with PAD slices; the
network finds each series' length from them and masks, so a padded series scores exactly as
the same series alone. The backward direction reverses each series within its own length
(a gather, which exports to ONNX) instead of packing, which does not export with dynamic shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeimg.sdk import real_lengths

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SliceEncoder(nn.Module):
    """Small strided CNN: one feature vector per slice, max-pooled so small blobs survive."""

    def __init__(self, features: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [1, 16, 32, features]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out)]
            layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        return self.body(slices).amax(dim=(-2, -1))


def _exporting() -> bool:
    return bool(
        torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    )


def _reverse_within(sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each series' first `length` steps, leaving its padding at the end."""
    steps = torch.arange(sequence.shape[1], device=sequence.device).unsqueeze(0)
    last = (lengths - 1).unsqueeze(1)
    index = torch.where(steps <= last, last - steps, steps)
    return sequence.gather(1, index.unsqueeze(-1).expand(-1, -1, sequence.shape[-1]))


class SeriesClassifier(nn.Module):
    """Series logit from the recurrent states, plus per-slice logits from the encoder alone.

    The per-slice head is an auxiliary target that trains the encoder quickly, and it is what the
    max-pooling baseline uses; the series logit is the model's answer.
    """

    def __init__(
        self, cell: str, features: int = 32, hidden: int = 32, bidirectional: bool = True
    ) -> None:
        super().__init__()
        self.encoder = SliceEncoder(features)
        self.slice_head = nn.Linear(features, 1)
        recurrent = CELLS[cell]
        self.forward_cell = recurrent(features, hidden, batch_first=True)
        self.backward_cell = (
            recurrent(features, hidden, batch_first=True) if bidirectional else None
        )
        directions = 2 if bidirectional else 1
        self.series_head = nn.Sequential(
            nn.Linear(hidden * directions, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )

    def _encode(self, series: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Slice features; in eager mode only real slices are encoded (speed, BatchNorm stats).

        Export traces the plain path: padded positions then get features too, but every later
        step masks them, so both paths give the same outputs.
        """
        flat = series.flatten(0, 1)
        if _exporting():
            return self.encoder(flat).reshape(*series.shape[:2], -1)
        real = valid.flatten()
        features = flat.new_zeros(flat.shape[0], self.slice_head.in_features)
        features[real] = self.encoder(flat[real])
        return features.reshape(*series.shape[:2], -1)

    def forward(self, series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = real_lengths(series)
        steps = torch.arange(series.shape[1], device=series.device).unsqueeze(0)
        valid = steps < lengths.unsqueeze(1)
        features = self._encode(series, valid)
        slice_logits = self.slice_head(features).squeeze(-1)
        states = self.forward_cell(features)[0]
        if self.backward_cell is not None:
            backward = self.backward_cell(_reverse_within(features, lengths))[0]
            states = torch.cat([states, _reverse_within(backward, lengths)], dim=-1)
        pooled = states.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)
        return self.series_head(pooled).squeeze(-1), slice_logits
