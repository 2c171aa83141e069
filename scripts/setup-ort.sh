#!/usr/bin/env bash
# Installs ONNX Runtime's shared library into vendor/onnxruntime/lib from the pinned PyPI wheel.
# ort's own download fetches from a host an air-gapped clinic cannot reach; PyPI (or a mirror of
# it) is a registry sites already proxy. The wheel is checked against a pinned sha256.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.31.1
wheel="onnxruntime-${version}-cp311-cp311-manylinux_2_28_x86_64.whl"
sha256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
dest=vendor/onnxruntime
lib="$dest/lib/libonnxruntime.so.${version}"

if [ "$(uname -m)" != "x86_64" ]; then
    echo "setup-ort: the pinned wheel is for x86_64 Linux; set ORT_DYLIB_PATH to a libonnxruntime.so ${version} for $(uname -m)" >&2
    exit 1
fi
if [ -f "$lib" ] && [ -f "$dest/.sha256" ] && [ "$(cat "$dest/.sha256")" = "$sha256" ]; then
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 \
    -d "$tmp" "onnxruntime==${version}"
echo "${sha256}  $tmp/${wheel}" | sha256sum --check --quiet

mkdir -p "$dest/lib"
python3 - "$tmp/$wheel" "$dest" "$version" <<'PY'
import sys, zipfile, shutil, os
wheel, dest, version = sys.argv[1:]
members = {
    f"onnxruntime/capi/libonnxruntime.so.{version}": f"lib/libonnxruntime.so.{version}",
    "onnxruntime/LICENSE": "LICENSE",
    "onnxruntime/ThirdPartyNotices.txt": "ThirdPartyNotices.txt",
}
with zipfile.ZipFile(wheel) as z:
    for src, dst in members.items():
        with z.open(src) as f, open(os.path.join(dest, dst), "wb") as out:
            shutil.copyfileobj(f, out)
PY
ln -sf "libonnxruntime.so.${version}" "$dest/lib/libonnxruntime.so.1"
ln -sf "libonnxruntime.so.1" "$dest/lib/libonnxruntime.so"
echo "$sha256" > "$dest/.sha256"
echo "setup-ort: ONNX Runtime ${version} installed in $dest/lib"
