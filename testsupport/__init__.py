"""Harnesses the tests, benchmarks and `make demo` share: a private Orthanc, real peers on
loopback, the DICOM corpus and the patient-data canary. Not part of the edgeimg package."""
