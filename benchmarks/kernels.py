"""Which convolution kernel runs, and what it costs: the demo net side by side in one run.

A training step (forward, loss, backward, Adam) and an FGSM input gradient (eval mode) of the
demo net (Isensee UNet, base 8, depth 4, 32³, Dice + CE) in float32 at batch 1 and batched, with
PyTorch's own dispatch (``native``) and with :mod:`segrobust.models.kernels` (``onednn``), and under
bf16 autocast; CPU ms per sample (process time: fair on a shared machine), one thread, with
the convolution ops the profiler saw. Then the agreement of the FGSM input gradient's sign
with native float32 (same weights).

    python benchmarks/kernels.py [--batch 4] [--repeats 5] [--size 32] [--model model.pt]

With ``--model`` (a trained demo model) the sign agreement is that of the deployed weights:
at random initial weights the gradient is small noise and bf16 rounding flips more signs.
"""

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from torch.profiler import ProfilerActivity, profile

from segrobust.attacks import attack_mode, per_sample_loss
from segrobust.losses import segmentation_loss
from segrobust.models.checkpoints import load_model
from segrobust.models.device import autocast, cpu_has_native_bf16, cpu_model
from segrobust.models.kernels import apply_kernel
from segrobust.models.unet import UNet3D

CONV_OPS = ("slow_conv3d", "mkldnn_convolution", "convolution_backward", "_OneDNNConv3d")


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return segmentation_loss(logits, target, variant="with_background_ce", gamma=1.0)


def conv_ops(run: Callable[[], object]) -> str:
    """The convolution ops one call of ``run`` executes, with their share of its CPU time."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    shares = {}
    for e in events:
        for op in CONV_OPS:
            if op in e.key:
                shares[e.key] = shares.get(e.key, 0) + e.self_cpu_time_total / total
    return ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))


def per_sample_ms(run: Callable[[], object], batch: int, repeats: int) -> float:
    run()  # warm-up (oneDNN primitive caches)
    began = time.process_time()
    for _ in range(repeats):
        run()
    return (time.process_time() - began) / repeats / batch * 1e3


def train_step(net: torch.nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor, amp: bool):
    net.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast(torch.device("cpu"), amp):
        loss = loss_fn(net(x), y)
    loss.backward()
    optimizer.step()


def input_gradient(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool):
    """The attacks' FGSM gradient: of the sum of per-sample losses, so samples stay independent,
    in eval mode with the weights frozen (as the attacks run)."""
    xi = x.clone().requires_grad_(True)
    with attack_mode(net), autocast(torch.device("cpu"), amp):
        loss = per_sample_loss(loss_fn, net(xi), y).sum()
        return torch.autograd.grad(loss, xi)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--model", help="a trained model.pt (default: random demo-net weights)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = load_model(args.model)[0] if args.model else UNet3D(4, 4, base_filters=8, depth=4)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    print(f"CPU: {cpu_model()}; torch {torch.__version__}; native bf16: {cpu_has_native_bf16()}")
    weights = args.model or "random initial weights"
    print(f"demo net (base 8, depth 4) at {args.size}³, {weights}, 1 thread, CPU ms per sample\n")
    print(f"{'setting':<28}{'train step':>12}{'FGSM grad':>12}   convolution ops (share of CPU)")

    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(args.batch, 4, *[args.size] * 3, generator=gen)
    labels = torch.randint(0, 4, (args.batch, *[args.size] * 3), generator=gen)
    gradients = {}
    rows = [
        ("fp32 batch 1, native", "native", False, 1),
        (f"fp32 batch {args.batch}, native", "native", False, args.batch),
        ("fp32 batch 1, onednn", "onednn", False, 1),
        (f"fp32 batch {args.batch}, onednn", "onednn", False, args.batch),
        ("bf16 autocast batch 1", "native", True, 1),
    ]
    for name, kernel, amp, batch in rows:
        net.load_state_dict(state)
        apply_kernel(net, kernel)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        x, y = inputs[:batch], labels[:batch]  # sample 1 is the same in every setting
        step = partial(train_step, net, optimizer, x, y, amp)
        grad = partial(input_gradient, net, x, y, amp)
        gradients[name] = grad()[:1]  # the first sample, at the shared weights
        step_ms = per_sample_ms(step, batch, args.repeats)
        grad_ms = per_sample_ms(grad, batch, args.repeats)
        print(f"{name:<28}{step_ms:>12.0f}{grad_ms:>12.0f}   {conv_ops(step)}")

    reference = gradients["fp32 batch 1, native"].sign()
    print("\nsign of the FGSM input gradient vs fp32 batch 1 native (same weights, sample 1):")
    for name, grad in gradients.items():
        agree = (grad.sign() == reference).float().mean().item()
        print(f"  {name:<28}{agree:.4%} of voxels agree")


if __name__ == "__main__":
    main()
