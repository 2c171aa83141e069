#!/usr/bin/env bash
# Everything a fresh machine needs to build, run and test plateqc. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build tools for the bundled C codecs (libjpeg-turbo needs cmake and nasm, CharLS cmake),
# DICOM tools the tests use as independent peers and validators (DCMTK, dicom3tools, and Orthanc
# as a real PACS, started privately by its tests), the browser that renders the
# review page in its test, and the PostgreSQL server the tests start privately (a cluster in a
# temporary folder, on a Unix socket; nothing is started here).
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v nasm >/dev/null || need+=(nasm)
command -v dcmdump >/dev/null || need+=(dcmtk)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
command -v Orthanc >/dev/null || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v socat >/dev/null || need+=(socat)
command -v openssl >/dev/null || need+=(openssl)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v chromium >/dev/null || need+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "setup: please install: ${need[*]} (Debian packages)" >&2
        exit 1
    fi
fi

scripts/setup-ort.sh

# A small Python environment for the generator's tests and as an independent DICOM reader.
if [ ! -x .venv-test/bin/python ] || ! cmp -s models/requirements-test.txt .venv-test/.requirements; then
    rm -rf .venv-test
    python3 -m venv .venv-test
    .venv-test/bin/pip install --quiet --upgrade pip
    .venv-test/bin/pip install --quiet -r models/requirements-test.txt
    cp models/requirements-test.txt .venv-test/.requirements
fi
