"""Attack jobs with test subjects batched vs one at a time: time and agreement, side by side.

Runs :func:`segrobust.evaluation.evaluate_attack` for each attack family on a trained model of a
finished run (its preprocessed test subjects, its config's attack settings) at ``batch: 1``
and at ``--batch``, one thread, and prints CPU seconds per subject (process time: fair on a
shared machine), the ratio, and how far the
batched results are from the one-at-a-time ones (max |ΔDice| over rows, share of equal rows).

    python benchmarks/attack_batch.py [--results results] [--model baseline/seed1] \\
        [--batch 4] [--families fgsm ifgsm pgd realistic]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from snakemake.utils import validate

from segrobust.data import read_split
from segrobust.evaluation import evaluate_attack
from segrobust.models.checkpoints import load_model
from segrobust.models.device import cpu_model

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["attack", "eps", "iteration", "severity", "subject", "region"]


def attack_settings(config: dict, family: str, batch: int) -> dict:
    """The settings the workflow passes to an attack job (rules/common.smk: attack_settings)."""
    attacks = config["attacks"]
    keys = ("loss", "gamma", "mask", "eval_batch", "examples", family)
    settings = {key: attacks[key] for key in keys} | {"batch": batch}
    settings["table1_iteration"] = config["statistics"]["table1_iteration"]
    settings["examples"] = {**settings["examples"], "subjects": []}
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", type=Path)
    parser.add_argument("--config", default=ROOT / "config" / "config.yaml", type=Path)
    parser.add_argument("--model", default="baseline/seed1")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--families", nargs="+", default=["fgsm", "ifgsm", "pgd", "realistic"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load(args.config.read_text())
    validate(config, str(ROOT / "config" / "schema.yaml"), set_default=True)
    device = torch.device("cpu")
    model = load_model(args.results / "models" / args.model / "model.pt", device)[0]
    test = read_split(args.results / "split.csv", "test")
    dirs = [args.results / "preprocessed" / s for s in test]
    print(f"CPU: {cpu_model()}; torch {torch.__version__}; {args.model}, {len(dirs)} subjects")
    print(f"{'family':<12}{'batch 1 CPU-s':>16}{f'batch {args.batch} CPU-s':>16}{'ratio':>8}"
          f"{'max |ΔDice|':>13}{'equal rows':>12}")  # fmt: skip
    for family in args.families:
        frames, seconds = [], []
        for batch in (1, args.batch):
            settings = attack_settings(config, family, batch)
            began = time.process_time()
            frame = evaluate_attack(family, model, "m", dirs, settings, device, config["seed"])
            seconds.append((time.process_time() - began) / len(dirs))
            frames.append(frame.sort_values(KEYS).reset_index(drop=True))
        delta = np.abs(frames[0]["dice"] - frames[1]["dice"])
        print(f"{family:<12}{seconds[0]:>16.2f}{seconds[1]:>16.2f}{seconds[0] / seconds[1]:>8.2f}"
              f"{delta.max():>13.4f}{(delta == 0).mean():>12.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
