"""What the output gate costs per object, against building the object and against dciodvfy.

On one synthetic 512 x 512 CT series of 50 slices it builds, in interleaved rounds, the SR (a
finding on every fifth slice), the SEG and the 50 derived images, and times for each object:
building and writing it (highdicom or our copy-of-source writer, gate included), the gate as
the writer runs it (on the object in memory, just before the save), and dciodvfy on the written
file (the judge the tests use). Ratios within one run: gate / write and gate / dciodvfy.
`python -m benchmarks.output_gate`.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from edgeimg.dicom import write
from edgeimg.dicom.derived import write_derived
from edgeimg.dicom.output_gate import check_output
from edgeimg.dicom.seg import write_seg
from edgeimg.dicom.sr import write_sr
from edgeimg.plugins import get_registry
from edgeimg.synth.dicom import write_study

SLICES, SIZE, ROUNDS = 50, 512, 5
ENGINE = "benchmark-engine-key"


def _sources(folder: Path) -> list[pydicom.Dataset]:
    written = write_study(folder, series=1, slices=SLICES, size=SIZE, seed=11)
    paths = sorted((written.out_dir / "series-001").glob("*.dcm"))
    return [pydicom.dcmread(path) for path in paths]


def _writers(sources: list[pydicom.Dataset]) -> dict[str, Any]:
    registry = get_registry()
    findings = [
        {"sop_instance_uid": ds.SOPInstanceUID, "probability": 0.9, "label": True}
        for ds in sources[::5]
    ]
    masks = np.zeros((len(sources), SIZE, SIZE), np.uint8)
    masks[:, 200:260, 200:260] = 1
    hu = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in sources])

    def options(model: str, out: Path) -> dict[str, Any]:
        return {"model": registry.model(model), "engine_key": ENGINE, "out_dir": out}

    return {
        "sr": lambda out: [write_sr(sources, findings, **options("cnn", out))],
        "seg": lambda out: [write_seg(sources, masks, **options("unet", out))],
        "derived": lambda out: write_derived(sources, hu, **options("autoencoder", out)),
    }


def _timed_gate(durations: list[float], ds: pydicom.Dataset, sources: list) -> None:
    """The gate as `save` calls it, timed."""
    seconds, _ = _time(partial(check_output, ds, sources))
    durations.append(seconds)


def _time(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def run() -> dict[str, Any]:
    dciodvfy = shutil.which("dciodvfy")
    with tempfile.TemporaryDirectory() as tmp:
        sources = _sources(Path(tmp) / "in")
        writers = _writers(sources)
        times: dict[str, dict[str, list[float]]] = {
            kind: {"write": [], "gate": [], "dciodvfy": []} for kind in writers
        }
        for round_ in range(ROUNDS):
            for kind, writer in writers.items():
                gated: list[float] = []
                write.check_output = partial(_timed_gate, gated)
                try:
                    seconds, paths = _time(partial(writer, Path(tmp) / f"{kind}-{round_}"))
                finally:
                    write.check_output = check_output
                times[kind]["write"].append(seconds / len(paths))
                times[kind]["gate"].extend(gated)
                for path in paths[:5]:
                    if dciodvfy:
                        judge = partial(subprocess.run, [dciodvfy, str(path)], capture_output=True)
                        times[kind]["dciodvfy"].append(_time(judge)[0])
    report: dict[str, Any] = {"slices": SLICES, "size": SIZE, "rounds": ROUNDS, "objects": {}}
    for kind, measured in times.items():
        medians = {what: statistics.median(v) * 1000 for what, v in measured.items() if v}
        entry = {f"{what}_ms": round(ms, 3) for what, ms in medians.items()}
        entry["gate_to_write"] = round(medians["gate"] / medians["write"], 4)
        if "dciodvfy" in medians:
            entry["gate_to_dciodvfy"] = round(medians["gate"] / medians["dciodvfy"], 4)
        report["objects"][kind] = entry
    return report


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
