"""What an extraction actor's process does around its forward passes: the hand-off of ready results to Ray
in one piece (``pipeline.actors.ahead(..., gather=True)``) and freed memory kept for the next forward
(``dltr.core.memory.retain_freed_memory``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.actors import ahead

REPO = Path(__file__).resolve().parents[1]


def _tables(n: int, fail_at: int | None = None, every_s: float = 0.1):
    """``n`` two-row tables, one every ``every_s`` seconds after the first; block ``fail_at`` raises."""
    for i in range(n):
        if i:
            time.sleep(every_s)
        if i == fail_at:
            raise ValueError(f"block {i} is unreadable")
        yield pa.table({"patient_id": [f"P{i:03d}a", f"P{i:03d}b"], "value": [2 * i, 2 * i + 1]})


def test_gathered_hand_off_carries_every_ready_result_in_order():
    """While the consumer is busy (a hand-off to Ray) the next results collect; its next step takes them all
    as one table, rows in production order. Without ``gather`` each result is a step of its own."""
    stream = ahead(_tables(4), 8, gather=True)
    assert next(stream).column("value").to_pylist() == [0, 1]  # block 0 alone: block 1 is 0.1 s away
    time.sleep(1.0)  # blocks 1-3 are produced meanwhile
    rest = list(stream)
    assert len(rest) == 1
    assert rest[0].column("value").to_pylist() == [2, 3, 4, 5, 6, 7]
    assert rest[0].column("patient_id").to_pylist() == [f"P{i:03d}{s}" for i in (1, 2, 3) for s in "ab"]
    plain = ahead(_tables(4), 8)
    next(plain)
    time.sleep(1.0)
    assert [t.column("value").to_pylist() for t in plain] == [[2, 3], [4, 5], [6, 7]]


def test_gathered_hand_off_delivers_the_ready_rows_before_the_producers_error():
    """Block 2 raises: the consumer gets blocks 0 and 1, then the error."""
    stream = ahead(_tables(5, fail_at=2), 8, gather=True)
    assert next(stream).column("value").to_pylist() == [0, 1]
    time.sleep(1.0)  # block 1 and the error are queued
    assert next(stream).column("value").to_pylist() == [2, 3]
    with pytest.raises(ValueError, match="block 2 is unreadable"):
        next(stream)


CHILD = """
import ctypes, hashlib, json, resource, sys
import torch
from dltr.core.memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]

def faults_per_round(rounds=20, size=12 * 2**20):
    # a forward's pattern: activation buffers of one size allocated, written and freed on every call
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        bufs = [libc.malloc(size) for _ in range(3)]
        for b in bufs:
            ctypes.memset(b, 1, size)
        for b in bufs:
            libc.free(b)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / rounds

faults_per_round(2)  # the first round may fault in either mode
faults = faults_per_round()
torch.set_num_threads(1)
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Conv3d(3, 16, 3, padding=1), torch.nn.ReLU(),
                        torch.nn.Conv3d(16, 16, 3, padding=1)).eval()
with torch.inference_mode():
    y = m(torch.randn(8, 3, 32, 32, 16))
print(json.dumps({"applied": applied, "faults_per_round": faults,
                  "output_sha256": hashlib.sha256(y.numpy().tobytes()).hexdigest()}))
"""


def _child(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only (returns False elsewhere)")
def test_retained_memory_removes_the_page_faults_of_each_forward_and_changes_no_value():
    """Buffers of one size allocated, written and freed on every call (a forward's activations): by default
    glibc maps each anew (its mmap threshold only rises to the freed size) and the process faults every
    page in again; with ``retain_freed_memory`` the next call reuses them. A forward's output is the same,
    bit for bit."""
    default, retained = _child("default"), _child("retain")
    assert retained["applied"] is True
    assert default["faults_per_round"] > 3 * 3072 * 0.9  # 3 x 12 MiB of 4 KiB pages, every round
    assert retained["faults_per_round"] < 5
    assert retained["output_sha256"] == default["output_sha256"]
