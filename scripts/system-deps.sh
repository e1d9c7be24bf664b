#!/bin/sh
# Installs the real DICOM peers the tests use (dcmtk, dicom3tools, Orthanc) when missing.
# As root on Debian/Ubuntu it uses apt-get; otherwise it says how, and those tests skip.
missing=""
# Chromium loads the status page of `serve --http` in its test (a screenshot).
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$missing chromium"
command -v storescu >/dev/null 2>&1 || missing="$missing dcmtk"
command -v dciodvfy >/dev/null 2>&1 || missing="$missing dicom3tools"
command -v Orthanc >/dev/null 2>&1 || missing="$missing orthanc"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The Debian package starts a system Orthanc; the tests run their own on free ports.
    if command -v service >/dev/null 2>&1; then service orthanc stop >/dev/null 2>&1 || true; fi
else
    echo "not installed:$missing - run: sudo apt-get install$missing (the tests that need them skip)"
fi
