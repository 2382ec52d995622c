"""Compares two run folders written by tests/same-behaviour/run: metrics and summaries (timings
aside), every checkpoint tensor, the exported models' logits and metadata. Exit 1 on a difference."""
import json
import pathlib
import sys

import numpy as np
import torch

TIMING = ("seconds", "samples_per_s", "time", "elapsed")


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not any(t in k for t in TIMING)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def records(path):
    if path.suffix == ".jsonl":
        return [without_timings(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return without_timings(json.loads(path.read_text()))


def tensors(path):
    return {k: v for k, v in torch.jit.load(str(path)).state_dict().items()}


def model_metadata(path):
    """The metadata JSON of a .shrink file (docs/format.md: its offset and size at bytes 24 and 32)."""
    data = path.read_bytes()
    offset, size = np.frombuffer(data[24:40], dtype="<u8")
    return without_timings(json.loads(data[offset:offset + size]))


def compared(path):
    """Files whose content both runs must share (not logs, configs with paths, or the teacher
    cache, which is named by file hashes)."""
    return path.is_file() and path.name != "log.txt" and path.suffix not in (".ini", ".html", ".log", ".tmp", ".h5")


def main(old, new):
    old, new = pathlib.Path(old), pathlib.Path(new)
    problems, counts = [], {"metrics records": 0, "checkpoints": 0, "tensors": 0, "logit files": 0, "model files": 0}
    for a in sorted(old.rglob("*")):
        rel = a.relative_to(old)
        b = new / rel
        if not compared(a):
            continue
        if not b.exists():
            problems.append(f"{rel}: missing in the new run")
            continue
        if a.suffix in (".jsonl", ".json"):
            ra, rb = records(a), records(b)
            counts["metrics records"] += len(ra) if isinstance(ra, list) else 1
            if ra != rb:
                problems.append(f"{rel}: differs\n  old: {json.dumps(ra)[:600]}\n  new: {json.dumps(rb)[:600]}")
        elif a.suffix == ".pt":
            ta, tb = tensors(a), tensors(b)
            counts["checkpoints"] += 1
            counts["tensors"] += len(ta)
            if ta.keys() != tb.keys():
                problems.append(f"{rel}: tensor names differ: {sorted(ta.keys() ^ tb.keys())}")
            for k in ta.keys() & tb.keys():
                if ta[k].shape != tb[k].shape or ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k]):
                    problems.append(f"{rel}: tensor {k} differs")
        elif a.suffix == ".logits":
            counts["logit files"] += 1
            la, lb = np.fromfile(a, dtype=np.float32), np.fromfile(b, dtype=np.float32)
            if la.shape != lb.shape or not np.array_equal(la, lb):
                problems.append(f"{rel}: logits differ (max abs {np.abs(la - lb).max() if la.shape == lb.shape else 'shape'})")
        elif a.suffix == ".shrink":
            counts["model files"] += 1
            if model_metadata(a) != model_metadata(b):
                problems.append(f"{rel}: metadata differs")
            if a.stat().st_size != b.stat().st_size:
                problems.append(f"{rel}: {a.stat().st_size} bytes before, {b.stat().st_size} after")
    for b in sorted(new.rglob("*")):
        if compared(b) and not (old / b.relative_to(new)).exists():
            problems.append(f"{b.relative_to(new)}: only in the new run")
    print("same-behaviour: compared " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for p in problems:
        print("DIFFERS: " + p)
    print("same-behaviour: " + ("IDENTICAL" if not problems else f"{len(problems)} differences"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
