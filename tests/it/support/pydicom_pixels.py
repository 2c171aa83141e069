"""Independent reader for the Rust tests: prints pydicom's view of each file's frame-1 pixels.

Usage: python pydicom_pixels.py FILE... ; one JSON object per line:
{"path", "rows", "columns", "sum", "sumsq", "min", "max", "head"} or {"path", "error"}.
Values are the stored values (before any rescale), as integers.
"""
import json
import sys

import numpy as np
import pydicom


def describe(path):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    a = arr.astype(np.int64)
    return {
        "path": path,
        "rows": int(a.shape[0]),
        "columns": int(a.shape[1]),
        "sum": int(a.sum()),
        "sumsq": int((a * a).sum()),
        "min": int(a.min()),
        "max": int(a.max()),
        "head": [int(x) for x in a.reshape(-1)[:64]],
    }


for p in sys.argv[1:]:
    try:
        out = describe(p)
    except Exception as e:  # the caller compares errors too
        out = {"path": p, "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
