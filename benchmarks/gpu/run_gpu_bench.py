"""GPU figures for the loader/encoder issue, self-contained: torch only (+ numpy; no DALI, no Ray).

Measures on the GPU at hand, per encoder family of ``models.encoders`` (imported from the repo
when present):
  - encoder ceiling (volumes/s, forward only, inputs already on the GPU): fp32; bf16 autocast
    with channels-last-3d; bf16 + torch.compile;
  - host-to-device transfer of ROI batches (pinned memory), GB/s and volumes/s;
  - a torch-side extraction rate: ROI crop + trilinear resample (grid_sample) on the GPU from
    whole int16 volumes copied from the host, then the bf16 encoder.
Writes ``benchmarks/gpu/results-<gpu-name>.json``. ``--cpu-smoke`` runs a tiny version on the CPU.

    python benchmarks/gpu/run_gpu_bench.py [--batch 32] [--grid 32,32,16] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _timed(fn, dev, seconds: float, min_iters: int = 3) -> float:
    """Seconds per call (median of windows), after warm-up, synchronising the device."""
    for _ in range(2):
        fn()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    per, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(per) < min_iters:
        t0 = time.perf_counter()
        fn()
        sync()
        per.append(time.perf_counter() - t0)
    per.sort()
    return per[len(per) // 2]


def encoder_ceiling(dev, batch, grid, seconds, compile_ok: bool) -> dict:
    from models.encoders import ENCODERS, build_encoder

    out = {}
    x = torch.randn(batch, 3, *grid, device=dev)
    for name in sorted(ENCODERS):
        m = build_encoder(name, 3).to(dev).eval()
        res = {}
        with torch.inference_mode():
            res["fp32"] = batch / _timed(lambda m=m: m(x), dev, seconds)
            if dev.type == "cuda":
                mc = m.to(memory_format=torch.channels_last_3d)
                xc = x.contiguous(memory_format=torch.channels_last_3d)

                def bf16(mod=mc, xc=xc):
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        mod(xc)

                res["bf16_channels_last_3d"] = batch / _timed(bf16, dev, seconds)
                if compile_ok:
                    try:
                        comp = torch.compile(mc)
                        res["bf16_channels_last_3d_compiled"] = batch / _timed(lambda comp=comp: bf16(comp), dev, seconds)
                    except Exception as e:  # noqa: BLE001 - record why compile is unavailable
                        res["compile_error"] = f"{type(e).__name__}: {e}"[:200]
        out[name] = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in res.items()}
    return out


def transfer(dev, batch, grid, seconds) -> dict:
    host = torch.randn(batch, 3, *grid)
    if dev.type == "cuda":
        host = host.pin_memory()
    s = _timed(lambda: host.to(dev, non_blocking=True), dev, seconds)
    return {"patients_per_s": round(batch / s, 1), "GB_per_s": round(host.numel() * 4 / s / 1e9, 2)}


def extraction(dev, batch, grid, seconds, shape=(96, 96, 32)) -> dict:
    """Whole int16 volumes from the host -> GPU crop + trilinear resample -> bf16 encoder."""
    from models.encoders import build_encoder

    vols = torch.randint(0, 600, (batch, 3, *shape), dtype=torch.int16)
    if dev.type == "cuda":
        vols = vols.pin_memory()
    m = build_encoder("resnet10", 3).to(dev).eval()
    # the central half of each volume, sampled on the ROI grid; volumes are (N, C, X, Y, Z) = grid_sample's
    # (N, C, D, H, W), whose grid holds (W, H, D) = (Z, Y, X) coordinates in [-1, 1]
    lin = [torch.linspace(-0.5, 0.5, g, device=dev) for g in grid]
    gx, gy, gz = torch.meshgrid(*lin, indexing="ij")
    base = torch.stack([gz, gy, gx], -1)[None]

    def step():
        v = (vols.to(dev, non_blocking=True).float() - 300.0) / 150.0
        x = F.grid_sample(v, base.expand(batch, -1, -1, -1, -1), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            m(x.contiguous())

    s = _timed(step, dev, seconds)
    return {"patients_per_s": round(batch / s, 1), "input_shape": list(shape), "encoder": "resnet10",
            "MB_per_s_host_to_device": round(vols.numel() * 2 / s / 1e6, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--grid", default="32,32,16")
    ap.add_argument("--seconds", type=float, default=3.0, help="measurement window per figure")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU (checks the script only)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    grid = tuple(int(v) for v in a.grid.split(","))
    if a.cpu_smoke:
        dev, a.batch, a.seconds = torch.device("cpu"), 2, 0.1
    elif torch.cuda.is_available():
        dev = torch.device("cuda")
    else:
        print("no CUDA GPU visible; use --cpu-smoke to check the script", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"cpu-{platform.machine()}"
    res = {"gpu": name, "torch": torch.__version__, "batch": a.batch, "grid": list(grid),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "encoder_ceiling_patients_per_s": encoder_ceiling(dev, a.batch, grid, a.seconds, not a.no_compile),
           "host_to_device": transfer(dev, a.batch, grid, a.seconds),
           "torch_extraction": extraction(dev, a.batch, grid, a.seconds)}
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    out = Path(a.out) if a.out else Path(__file__).with_name(f"results-{slug}.json")
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
