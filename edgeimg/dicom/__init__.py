"""DICOM input: read and validate files, decode pixel data, order slices into series.

Kept import-light on purpose: the CLI imports `edgeimg.dicom` for `--help` and plugin listing,
so pydicom and numpy load only when `edgeimg.dicom.read`, `.series` or `.preprocess` is used.
"""
