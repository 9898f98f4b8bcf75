"""Shared-gradient sweeps vs naive per-setting loops, timed side by side on the CPU.

(a) FGSM over K ε values: one gradient for all ε (``fgsm_sweep``) vs a per-ε loop recomputing
    the gradient each time (as torchattacks and ART do).
(b) Dice-vs-iterations curve to N_max: one i-FGSM run evaluated at every iterate
    (``linf_iterates``, reusing the gradient forward's logits) vs separate runs for N = 1..N_max.
Both sides include the evaluation forwards and the Dice computation, and must give identical
Dice values. The machine may be shared, so (a) alternates both sides ``--repeats`` times and
keeps each side's fastest run, and the ratios expected from the operation counts and the measured
cost of one forward and one forward + input-gradient are printed alongside.

Usage: python benchmarks/attack_sweeps.py [--size 32] [--base-filters 8] [--depth 4] [--bf16]
"""

import argparse
import time
from functools import partial

import numpy as np
import torch

from segrobust import attacks
from segrobust.losses import segmentation_loss
from segrobust.metrics import dice_regions
from segrobust.models.device import autocast, predict_classes
from segrobust.models.unet import UNet3D


def region_dice(classes: torch.Tensor, truth: np.ndarray) -> list[dict[str, float]]:
    """Dice per region for each sample of a predicted class map batch."""
    pred = classes.cpu().numpy()
    return [dice_regions(pred[i], truth[i]) for i in range(len(truth))]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def fastest(fn, repeats: int) -> float:
    return min(timed(fn)[0] for _ in range(repeats))


def fgsm_per_eps(model, x, y, truth, loss_fn, epsilons):
    """Baseline: a fresh gradient per ε, then an evaluation forward."""
    return [
        region_dice(predict_classes(model, attacks.fgsm(model, x, y, loss_fn, eps)), truth)
        for eps in epsilons
    ]


def fgsm_shared(model, x, y, truth, loss_fn, epsilons, eval_batch=1):
    """One gradient; then only evaluation forwards (none for ε = 0), eval_batch ε per forward."""
    sweep = attacks.fgsm_sweep(model, x, y, loss_fn, epsilons, eval_batch=eval_batch)
    return [region_dice(it.logits.argmax(1), truth) for it in sweep]


def ifgsm_per_n(model, x, y, truth, loss_fn, eps, alpha, n_max):
    """Baseline: a separate i-FGSM run for every N = 1..n_max, then an evaluation forward."""
    return [
        region_dice(
            predict_classes(model, attacks.ifgsm(model, x, y, loss_fn, eps, alpha, n)), truth
        )
        for n in range(1, n_max + 1)
    ]


def ifgsm_one_run(model, x, y, truth, loss_fn, eps, alpha, n_max):
    """One run to n_max, Dice at every iterate from the logits the attack already computed."""
    iterates = attacks.linf_iterates(model, x, y, loss_fn, eps, alpha, n_max)
    return [region_dice(it.logits.argmax(1), truth) for it in iterates if it.step >= 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--base-filters", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--n-eps", type=int, default=11, help="ε = 0, 0.001, ... (paper Fig. 3)")
    parser.add_argument("--n-max", type=int, default=20)
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.005)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for every forward")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        model = UNet3D(base_filters=args.base_filters, depth=args.depth).eval()
    shape = (args.batch, 4, args.size, args.size, args.size)
    x = torch.randn(shape, generator=generator)
    y = torch.randint(0, 4, (args.batch, *shape[2:]), generator=generator)
    truth = y.numpy().astype(np.uint8)
    loss_fn = partial(segmentation_loss, variant="paper")
    epsilons = [round(0.001 * i, 3) for i in range(args.n_eps)]
    print(
        f"UNet3D base {args.base_filters} depth {args.depth}, input {shape}, "
        f"{torch.get_num_threads()} torch threads, {'bf16' if args.bf16 else 'fp32'}"
    )

    k, n_max = len(epsilons), args.n_max
    with autocast(x.device, args.bf16):
        t_grad = fastest(lambda: attacks.fgsm(model, x, y, loss_fn, 0.01), args.repeats)
        t_fwd = fastest(lambda: predict_classes(model, x), args.repeats)
        print(f"one forward {t_fwd:.3f} s, one forward + input gradient {t_grad:.3f} s")

        sweep_args = (model, x, y, truth, loss_fn, epsilons)
        t_loop = t_sweep = t_batched = float("inf")
        for _ in range(args.repeats):
            t, d_loop = timed(lambda: fgsm_per_eps(*sweep_args))
            t_loop = min(t_loop, t)
            t, d_sweep = timed(lambda: fgsm_shared(*sweep_args))
            t_sweep = min(t_sweep, t)
            t, d_batched = timed(lambda: fgsm_shared(*sweep_args, eval_batch=k))
            t_batched = min(t_batched, t)
        assert d_loop == d_sweep, "FGSM sweep and per-ε loop disagree"
        worst = max(
            abs(a[r] - b[r])
            for da, db in zip(d_loop, d_batched, strict=True)
            for a, b in zip(da, db, strict=True)
            for r in a
        )
        expected = k * (t_grad + t_fwd) / (t_grad + (k - 1) * t_fwd)
        print(
            f"(a) FGSM over {k} ε: per-ε loop {t_loop:.2f} s, shared gradient {t_sweep:.2f} s, "
            f"speed-up {t_loop / t_sweep:.1f}× (expected from unit costs {expected:.1f}×); "
            f"shared gradient + all ε in one batched forward {t_batched:.2f} s, speed-up "
            f"{t_loop / t_batched:.1f}× (max Dice difference {worst:.1e})"
        )

        iterative = (loss_fn, args.eps, args.alpha, n_max)
        t_runs, d_runs = timed(lambda: ifgsm_per_n(model, x, y, truth, *iterative))
        t_one, d_one = timed(lambda: ifgsm_one_run(model, x, y, truth, *iterative))
        assert d_runs == d_one, "one-run curve and per-N runs disagree"
        runs_cost = n_max * (n_max + 1) / 2 * t_grad + n_max * t_fwd
        expected = runs_cost / (n_max * t_grad + t_fwd)
        print(
            f"(b) i-FGSM Dice curve N = 1..{n_max}: per-N runs {t_runs:.2f} s, one run "
            f"{t_one:.2f} s, speed-up {t_runs / t_one:.1f}× (expected from unit costs "
            f"{expected:.1f}×)"
        )
        wt = [round(d[0]["WT"], 3) for d in d_one]
        print(f"    WT Dice by iteration (random weights, sanity only): {wt}")


if __name__ == "__main__":
    main()
