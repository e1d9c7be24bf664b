"""DICOM in and out: `read`, `series` and `preprocess` take input apart; the writers build results.

Kept import-light on purpose: the CLI imports `edgeimg.dicom` for `--help` and plugin listing,
so pydicom and numpy load only when a submodule is imported.
"""
