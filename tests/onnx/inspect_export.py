#!/usr/bin/python3
"""What the ONNX export tests (tests/test_onnx_export.cpp) ask of python3-onnx.

usage: inspect_export.py check FILE...   onnx.checker (full check: shapes inferred too) on each file;
                                         prints "ok N", or the file and the checker's message (exit 1)
       inspect_export.py ops FILE        the op types of a graph (ONNX Runtime's optimized one, say)
                                         as JSON {op_type: count}, domains left out
"""
import collections
import json
import sys

import onnx


def check(files):
    for f in files:
        try:
            onnx.checker.check_model(onnx.load(f), full_check=True)
        except Exception as e:  # the checker's own exception types vary across onnx versions
            print(f"{f}: {type(e).__name__}: {e}")
            return 1
    print(f"ok {len(files)}")
    return 0


def ops(file):
    counts = collections.Counter(n.op_type for n in onnx.load(file).graph.node)
    print(json.dumps(dict(counts), sort_keys=True))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("check", "ops"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(check(sys.argv[2:]) if sys.argv[1] == "check" else ops(sys.argv[2]))
