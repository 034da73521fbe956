"""Encoder ceiling: forward passes per second on tensors already in memory, per architecture."""

from __future__ import annotations

import torch

from benchmarks.harness import BenchContext, Figure, measure


def run(ctx: BenchContext) -> list[Figure]:
    from models import ENCODERS, build_encoder
    from pipeline.loaders import RoiConfig

    cfg = RoiConfig()
    batch = 8
    torch.manual_seed(ctx.seed)
    x = torch.randn(batch, cfg.n_channels, *cfg.grid)
    figs = []
    for name in sorted(ENCODERS):
        m = build_encoder(name, cfg.n_channels).eval()
        n_params = sum(p.numel() for p in m.parameters())

        def fwd(m=m):
            with torch.inference_mode():
                m(x)

        t = measure(fwd, repeats=ctx.repeats, warmup=1)
        figs.append(Figure("encoder", f"{name} forward, batch {batch}, grid {cfg.grid}, fp32 CPU",
                           "volumes/s", ours=t.rate(batch),
                           notes={"params": n_params, "threads": torch.get_num_threads()}))
    return figs
