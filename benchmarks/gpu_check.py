"""One-shot GPU check (≤ 5 minutes on one GPU): the paper net in fp32 and bf16, then a tiny DAG.

1. The paper's network (Isensee UNet, base 16, depth 5) at 128³, batch 1: a training step
   (Dice + CE, Adam) and an FGSM input gradient (eval mode), in float32 and under bf16
   autocast: time per step, peak GPU memory, and the share of voxels where the sign of the
   FGSM input gradient agrees between bf16 and float32 at the same weights.
2. The tiny test config's whole DAG (tests/test_workflow.py's TINY) with ``--cores 2`` on the
   GPU (training, evaluation and attacks on CUDA with bf16 autocast), timed, then its clean
   Dice per model read from the results table.

    python benchmarks/gpu_check.py                 # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --size 32 --no-dag   # a quick dry run
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from segrobust.losses import segmentation_loss
from segrobust.models.device import autocast
from segrobust.models.unet import UNet3D

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return segmentation_loss(logits, target, variant="with_background_ce", gamma=1.0)


def timed(run, device: torch.device, repeats: int) -> tuple[float, float]:
    """Seconds per call and peak memory (GiB, CUDA only) of ``run`` after one warm-up call."""
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    for _ in range(repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = float("nan")
    return (time.perf_counter() - began) / repeats, peak


def network_check(device: torch.device, size: int, repeats: int) -> None:
    torch.manual_seed(0)
    net = UNet3D(4, 4, base_filters=16, depth=5).to(device)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(1, 4, size, size, size, device=device)
    y = torch.randint(0, 4, (1, size, size, size), device=device)
    print(f"paper net (base 16, depth 5) at {size}³, batch 1, on {device}")
    header = ("precision", "train step s", "peak GiB", "FGSM grad s", "peak GiB")
    print("".join(f"{h:>14}" for h in header))
    signs = {}
    for amp in (False, True):
        net.load_state_dict(state)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step(amp=amp, optimizer=optimizer) -> None:
            net.train()
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp):
                loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()

        def grad(amp=amp) -> torch.Tensor:
            net.eval()
            xi = x.clone().requires_grad_(True)
            with autocast(device, amp):
                loss = loss_fn(net(xi), y)
            return torch.autograd.grad(loss, xi)[0]

        signs[amp] = grad().sign()  # at the shared initial weights
        step_s, step_gib = timed(step, device, repeats)
        grad_s, grad_gib = timed(grad, device, repeats)
        name = "bf16" if amp else "fp32"
        print(f"{name:>14}{step_s:>14.3f}{step_gib:>14.2f}{grad_s:>14.3f}{grad_gib:>14.2f}")
    agree = (signs[True] == signs[False]).float().mean().item()
    print(f"FGSM input-gradient sign, bf16 vs fp32 (same weights): {agree:.4%} of voxels agree")


def dag_check() -> None:
    from test_workflow import TINY, write_config  # the CI's tiny config

    with tempfile.TemporaryDirectory() as workdir:
        config = write_config(Path(workdir) / "c.yaml", **TINY)
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", workdir,
               "--cores", "2", "--configfile", str(config)]  # fmt: skip
        began = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - began
        if result.returncode:
            print(result.stdout[-3000:], result.stderr[-3000:])
            raise SystemExit(f"tiny DAG failed (rc {result.returncode})")
        table = pd.read_csv(Path(workdir) / "results" / "results.csv")
        ran = sorted(set(table["precision"] + "/" + table["kernel"]))
        clean = table[table["attack"] == "none"].groupby(["model", "region"])["dice"].mean()
        print(f"\ntiny DAG: rc 0 in {seconds:.0f} s, {len(table)} result rows, ran {ran}")
        print("clean Dice (mean over subjects and seeds):")
        print(clean.unstack().round(3).to_string())
        print(yaml.safe_dump({"seeds": sorted(map(int, table["seed"].unique()))}).strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-dag", action="store_true", help="skip the tiny DAG")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine (or pass --device cpu)")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    began = time.perf_counter()
    network_check(device, args.size, args.repeats)
    if not args.no_dag:
        dag_check()
    print(f"\ngpu_check finished in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
