"""The fault, load and attack suite at test scale: the bars that must hold on every run.

`make soak` runs the same module at soak scale (2,000 instances, 10 kills) and writes
benchmarks/results/reliability.json; this keeps the short version in `make test`.
"""

from __future__ import annotations

import shutil

import pytest

from benchmarks import reliability
from testsupport.pacs import Orthanc


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the TLS certificate")
@pytest.mark.skipif(Orthanc.available() is not None, reason=str(Orthanc.available()))
def test_reliability_bars_hold_at_test_scale():
    report = reliability.run("test")
    crashed = report["crash"]
    assert crashed["kills"] == 2 and crashed["acknowledged"] > 0
    assert crashed["lost"] == 0
    assert crashed["orphan_temp_files"] == 0
    assert crashed["results"]["duplicate_results_at_pacs"] == 0
    assert crashed["results"]["series_with_results"] == crashed["results"]["series"] == 5
    failed = [bar for bar, met in report["bars"].items() if not met]
    assert failed == [], report
