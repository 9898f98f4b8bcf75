"""Attacks in fp32 vs bf16 autocast, side by side: Dice under attack, gradient agreement, cost.

``attacks.precision`` defaults to fp32 because bf16 input gradients point elsewhere, which can
make an attack weaker and a model look more robust than it is. For each trained replicate given
(of a finished run: its preprocessed test subjects, its config's attack settings) this runs
each attack family at ``attacks.precision`` fp32 and bf16 in one process, one thread, and
prints the mean Dice per region (FGSM at ``--eps``), the share of input voxels whose first
gradient's sign agrees with fp32's, and CPU seconds per subject (process time: fair on a shared
machine). On a CPU without native bf16 the bf16 rows run reference kernels: far slower.

    python benchmarks/attack_precision.py [--results results] [--models baseline/seed1 ...] \\
        [--families fgsm pgd] [--eps 0.05]
"""

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from snakemake.utils import validate

from segrobust import attacks as atk
from segrobust.data import open_volume, read_split
from segrobust.evaluation import evaluate_attack
from segrobust.losses import segmentation_loss
from segrobust.models.checkpoints import load_model
from segrobust.models.device import autocast, cpu_has_native_bf16, cpu_model, evaluation_amp
from segrobust.models.kernels import provenance

ROOT = Path(__file__).resolve().parents[1]


def attack_settings(config: dict, family: str, eps: float) -> dict:
    """The settings the workflow passes to an attack job (rules/common.smk: attack_settings),
    FGSM at ``eps`` only."""
    attacks = config["attacks"]
    keys = ("loss", "gamma", "mask", "batch", "eval_batch", family)
    settings = {key: attacks[key] for key in keys} | {"examples": {"subjects": [], "eps": []}}
    settings["table1_iteration"] = config["statistics"]["table1_iteration"]
    if family == "fgsm":
        settings["fgsm"] = {"epsilons": [eps]}
    return settings


def gradient_signs(model, dirs, settings, amp: bool) -> list[torch.Tensor]:
    """sign(∇ₓ loss) per test subject, as FGSM takes it, at fp32 or under bf16 autocast."""
    loss = partial(segmentation_loss, variant=settings["loss"], gamma=settings["gamma"])
    objective = lambda logits, target, step: atk.per_sample_loss(loss, logits, target)  # noqa: E731
    signs = []
    for directory in dirs:
        volume = open_volume(directory)
        x = torch.from_numpy(np.array(volume.image))[None]
        y = torch.from_numpy(np.array(volume.label))[None].long()
        with autocast(torch.device("cpu"), amp), atk.attack_mode(model):
            grad, _ = atk.input_gradient(model, x, y, objective)
        signs.append(grad.float().sign())
    return signs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", type=Path)
    parser.add_argument("--config", default=ROOT / "config" / "config.yaml", type=Path)
    parser.add_argument("--models", nargs="+", default=["baseline/seed1", "baseline/seed2"])
    parser.add_argument("--families", nargs="+", default=["fgsm", "pgd"])
    parser.add_argument("--eps", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load(args.config.read_text())
    validate(config, str(ROOT / "config" / "schema.yaml"), set_default=True)
    settings = {family: attack_settings(config, family, args.eps) for family in args.families}
    device = torch.device("cpu")
    test = read_split(args.results / "split.csv", "test")
    dirs = [args.results / "preprocessed" / s for s in test]
    native = "native bf16" if cpu_has_native_bf16() else "bf16 emulated (no native bf16)"
    print(f"CPU: {cpu_model()} ({native}); torch {torch.__version__}; {len(dirs)} test subjects;"
          f" FGSM ε = {args.eps:g}, loss {config['attacks']['loss']}")  # fmt: skip
    header = f"{'model':<18}{'attack':<8}{'precision':<11}{'kernel':<8}{'WT':>7}{'TC':>7}{'ET':>7}"
    print(header + f"{'sign agrees':>13}{'CPU-s/subject':>15}")
    for name in args.models:
        model = load_model(args.results / "models" / name / "model.pt", device)[0]
        first = settings[args.families[0]]
        reference = torch.cat(gradient_signs(model, dirs, first, amp=False))
        for family in args.families:
            for precision in ("fp32", "bf16"):
                amp = evaluation_amp(precision, device)
                began = time.process_time()
                frame = evaluate_attack(family, model, "m", dirs, settings[family], device,
                                        config["seed"], amp=amp)  # fmt: skip
                seconds = (time.process_time() - began) / len(dirs)
                dice = frame.groupby("region")["dice"].mean()
                signs = torch.cat(gradient_signs(model, dirs, first, amp))
                agree = (signs == reference).float().mean()
                kernel = provenance(model, device, amp)["kernel"]
                cells = "".join(f"{dice[r]:>7.3f}" for r in ("WT", "TC", "ET"))
                print(f"{name:<18}{family:<8}{precision:<11}{kernel:<8}{cells}{agree:>13.2%}"
                      f"{seconds:>15.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
