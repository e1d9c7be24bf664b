"""From DICOM files to model results and output objects: the part `run` and `serve` share.

`headers` reads headers and groups series (`serve` builds the same `SeriesJob`s from its
queue rows instead), `decode` turns files into model inputs in worker processes, and `runner`
infers and hands results to the writers: one loop, whichever command drives it.
"""

from edgeimg.pipeline.decode import (
    DECODE_CHUNK,
    Decoded,
    decode_all,
    decode_file,
    decode_series,
    decoder_pool,
    start_worker,
)
from edgeimg.pipeline.headers import Scan, SeriesJob, accepts, scan, series_jobs
from edgeimg.pipeline.runner import (
    Inferencer,
    Producer,
    SeriesRun,
    for_writing,
    run_series,
    write_outputs,
)

__all__ = [
    "DECODE_CHUNK",
    "Decoded",
    "Inferencer",
    "Producer",
    "Scan",
    "SeriesJob",
    "SeriesRun",
    "accepts",
    "decode_all",
    "decode_file",
    "decode_series",
    "decoder_pool",
    "for_writing",
    "run_series",
    "scan",
    "series_jobs",
    "start_worker",
    "write_outputs",
]
