"""Enhanced multi-frame CT written by another project: highdicom's Legacy Converted Enhanced CT."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom

from edgeimg.synth.dicom import write_study


def write_legacy_enhanced(root: Path, *, slices: int, size: int, seed: int = 5) -> Path:
    """A folder holding one legacy converted enhanced CT made from a synthetic series."""
    written = write_study(root / "classic", series=1, slices=slices, size=size, seed=seed)
    paths = sorted((written.out_dir / "series-001").glob("*.dcm"))
    converted = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(path) for path in paths],
        series_instance_uid=hd.UID(),
        series_number=90,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    folder = root / "enhanced"
    folder.mkdir(parents=True)
    converted.save_as(folder / "legacy.dcm")
    return folder
