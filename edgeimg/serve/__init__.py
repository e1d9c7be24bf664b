"""`edgeimg serve`: the DICOM listener, its spool and queue, the worker and the forwarders.

`listener` takes associations and stores what they carry; `received` judges each instance
(with `edgeimg.dicom`'s checks); `series_handler` is the seam to the worker (`pipeline`);
`eventlog` writes every event line, scrubbed of patient data.
"""
