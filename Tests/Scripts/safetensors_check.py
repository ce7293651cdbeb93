#!/usr/bin/env python3
"""Checks that a safetensors file written by palm loads with the reference `safetensors` package.

Usage: safetensors_check.py FILE EXPECTED.json
       safetensors_check.py --write FILE     (a reference file for palm's reader to check)
EXPECTED.json: {"tensors": {name: {"shape": [...], "values": [...] (flat, row-major)}},
                "metadata": {str: str}}
Exit 0 when every tensor has the dtype float32, the shape and the exact values expected and the
metadata matches; 1 with a message otherwise; 77 when safetensors/numpy are not installed (skip).
--write saves, with safetensors.numpy.save_file: "w" F32 (2, 3) = arange(6) / 4 - 0.5,
"ids" I32 (4,) = [-2, 0, 7, 2**31 - 1], "bytes" U8 (3,) = [0, 128, 255], "d" F64 () = 1.25,
metadata {"writer": "python"}.
"""
import json
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file
except ImportError as e:  # the Swift test reports this as a skip
    print(f"skip: {e}")
    sys.exit(77)


def write(path: str) -> int:
    from safetensors.numpy import save_file
    save_file({
        "w": (np.arange(6, dtype=np.float32) / 4 - 0.5).reshape(2, 3),
        "ids": np.array([-2, 0, 7, 2**31 - 1], dtype=np.int32),
        "bytes": np.array([0, 128, 255], dtype=np.uint8),
        "d": np.array(1.25, dtype=np.float64),
    }, path, metadata={"writer": "python"})
    return 0


def main() -> int:
    if sys.argv[1] == "--write":
        return write(sys.argv[2])
    path, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    tensors = load_file(path)
    want = expected["tensors"]
    if sorted(tensors) != sorted(want):
        print(f"names differ: file {sorted(tensors)}, expected {sorted(want)}")
        return 1
    for name, spec in want.items():
        t = tensors[name]
        if t.dtype != np.float32:
            print(f"{name}: dtype {t.dtype}")
            return 1
        if list(t.shape) != spec["shape"]:
            print(f"{name}: shape {list(t.shape)}, expected {spec['shape']}")
            return 1
        values = np.array(spec["values"], dtype=np.float32).reshape(spec["shape"])
        if not np.array_equal(t, values):
            print(f"{name}: values differ, max abs diff {np.max(np.abs(t - values))}")
            return 1
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    if meta != expected.get("metadata", {}):
        print(f"metadata {meta}, expected {expected.get('metadata', {})}")
        return 1
    print(f"ok: {len(want)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
