"""Imported once in the worker pool's forkserver, so that every worker forks ready to write.

A worker's first SR otherwise paid about 0.7 s of CPU: importing highdicom and our writers,
then highdicom reading its tables of DICOM modules and IODs (JSON) the first time it checks
an attribute. Mid-run, on 2 cores, that came out of decoding. Here it is paid once, in the
forkserver, and the workers share the result; building one bare SOP instance through
highdicom's public API is what loads the tables.
"""

from __future__ import annotations

import contextlib

import highdicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import edgeimg.pipeline.runner  # noqa: F401  (what a worker unpickles its tasks into)
import edgeimg.writers.builtin  # noqa: F401

#: Comprehensive 3D SR Storage, the class the SR writer makes
_SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


def load_highdicom_tables() -> None:
    """Make highdicom load its module and IOD tables now (they are cached per process)."""
    highdicom.SOPClass(
        study_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        series_number=1,
        sop_instance_uid=generate_uid(),
        sop_class_uid=_SR_CLASS,
        instance_number=1,
        modality="SR",
        manufacturer="edgeimg",
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )


with contextlib.suppress(Exception):  # a failure here only costs the first write its speed
    load_highdicom_tables()
