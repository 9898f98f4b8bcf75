"""Cost of the paper's 3D UNet: parameters, forward FLOPs, and fp32 vs bf16 CPU step time.

Usage: python benchmarks/model_cost.py [--flop-size 128] [--time-size 64] [--repeats 3]
"""

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from segrobust.losses import segmentation_loss
from segrobust.models.device import autocast
from segrobust.models.unet import UNet3D


def forward_flops(model_args: dict, size: int) -> int:
    """Forward FLOPs for one (1, 4, size³) input, counted on meta tensors (nothing is computed)."""
    with torch.device("meta"):
        model = UNet3D(**model_args)
        x = torch.empty(1, model.arch["in_channels"], size, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def step_seconds(model: UNet3D, x: torch.Tensor, target: torch.Tensor, bf16: bool) -> float:
    """Wall time of one forward + backward pass (loss: paper Dice) on the CPU."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with autocast(x.device, bf16):
        logits = model(x)
    segmentation_loss(logits, target).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--flop-size", type=int, default=128)
    parser.add_argument("--time-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model_args = {"base_filters": args.base_filters, "depth": args.depth}

    model = UNet3D(**model_args)
    n_params = sum(p.numel() for p in model.parameters())
    flops = forward_flops(model_args, args.flop_size)
    print(f"UNet3D base {args.base_filters} depth {args.depth}: {n_params:,} parameters")
    print(f"forward FLOPs at {args.flop_size}^3: {flops / 1e9:.1f} GFLOP")

    generator = torch.Generator().manual_seed(args.seed)
    shape = (1, 4, args.time_size, args.time_size, args.time_size)
    x = torch.randn(shape, generator=generator)
    target = torch.randint(0, 4, (1, *shape[2:]), generator=generator)
    times = {False: [], True: []}
    for bf16 in (False, True):  # warm-up
        step_seconds(model, x, target, bf16)
    for _ in range(args.repeats):  # interleaved so both see the same machine load
        for bf16 in (False, True):
            times[bf16].append(step_seconds(model, x, target, bf16))
    fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"forward+backward at {args.time_size}^3 on CPU ({torch.get_num_threads()} threads, "
        f"median of {args.repeats}): fp32 {fp32:.3f} s, bf16 autocast {bf16:.3f} s, "
        f"ratio {fp32 / bf16:.2f}x"
    )


if __name__ == "__main__":
    main()
