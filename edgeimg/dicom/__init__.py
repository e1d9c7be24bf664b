"""DICOM in and out: `validate` (with `framing`) vouches for input, `read` decodes it, `series`
and `preprocess` take it apart; the writers build results.

Kept import-light on purpose: the CLI imports `edgeimg.dicom` for `--help` and plugin listing,
so pydicom and numpy load only when a submodule is imported.
"""
