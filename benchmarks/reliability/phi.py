"""The phi_canary part (bench and soak): testsupport/canary.py over every model, longer
series than tests/test_phi_canary.py; its bar is 0 markers outside the DICOM objects.
"""

from __future__ import annotations

import time
from pathlib import Path

from testsupport.canary import ALL_MODELS, QUICK_MODELS
from testsupport.canary import exercise as canary_exercise

#: scales that run the canary (the test scale leaves it to tests/test_phi_canary.py): every
#: model, the 512 x 512 enhancers included, over longer series than the test's
PHI_CANARY = {
    "bench": dict(models=QUICK_MODELS, slices=16),
    "soak": dict(models=ALL_MODELS, slices=24),
}


def phi_canary(workdir: Path, models: tuple[str, ...], slices: int) -> dict:
    """Marker studies through storescu, TLS, Orthanc, every command and the error paths; the
    markers found in what edgeimg wrote outside the DICOM objects (testsupport/canary.py)."""
    started = time.monotonic()
    run, found = canary_exercise(workdir / "phi", workdir / "phi-engines", models, slices)
    return {
        "models": list(models),
        "slices_per_series": slices,
        "files_searched": found.files,
        "bytes_searched": found.bytes,
        "dicom_objects_left_out": found.dicom_skipped,
        "hits": found.hits[:20],
        "hit_count": len(found.hits),
        "spooled_with_markers": run.counts["spooled with markers"],
        "results_at_pacs": run.counts["results at the PACS"],
        "exit_codes": run.codes,
        "seconds": round(time.monotonic() - started, 1),
    }


def phi_bars(report: dict) -> dict[str, bool]:
    if "phi_canary" not in report:
        return {}
    return {"PHI canary: markers outside the DICOM objects == 0": not report["phi_canary"]["hits"]}
