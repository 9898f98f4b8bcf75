"""The demo's training regime, measured on the undefended baseline only.

For each candidate stopping rule this trains the demo's baseline (the default config with the
candidate's ``training`` overlay) for the seeds given, scores it clean and under FGSM at
``--eps`` through the real workflow (``snakemake`` on a scratch working directory, one
candidate after another), and prints per seed the stopping and best epochs, the training's CPU
seconds and the clean and attacked Dice (WT, TC, ET) with the relative drop of their mean. No
defence is trained: the demo's regime is chosen on the baseline alone, by the criterion written
in ``config/config.yaml`` before these numbers were seen.

    python benchmarks/demo_regime.py --workdir /tmp/regime [--seeds 1 2] [--cores 2] \\
        [--candidates fixed12 patience5 patience10]
"""

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from segrobust.models.device import cpu_has_native_bf16, cpu_model

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = {
    "fixed12": {"epochs": 12, "patience": None},  # the demo before the stopping rule
    "patience5": {"epochs": 60, "patience": 5},
    "patience10": {"epochs": 100, "patience": 10},
}
REGIONS = ("WT", "TC", "ET")


def run_candidate(workdir: Path, name: str, seeds: list[int], eps: float, cores: int) -> None:
    """Train, evaluate and FGSM-attack the baseline under candidate ``name`` (snakemake)."""
    overlay = workdir / f"{name}.yaml"
    overlay.write_text(yaml.safe_dump({
        "training": {**CANDIDATES[name], "seeds": seeds},
        "attacks": {"fgsm": {"epsilons": [eps]}, "examples": {"eps": [eps]}},
        "figures": {"fig1_eps": eps, "fig5_eps": eps},
    }))  # fmt: skip
    outputs = (("evaluation", "clean.csv"), ("attacks", "fgsm.csv"))
    targets = [f"results/{kind}/baseline/seed{s}/{leaf}" for s in seeds for kind, leaf in outputs]
    command = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"),
               "-d", str(workdir), "--cores", str(cores),
               "--configfile", str(ROOT / "config" / "config.yaml"), str(overlay)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"candidate {name}: snakemake failed\n{done.stderr[-3000:]}")


def measure(workdir: Path, name: str, seeds: list[int], eps: float) -> list[dict]:
    results = workdir / "results"
    rows = []
    for seed in seeds:
        extra = torch.load(results / f"models/baseline/seed{seed}/model.pt", weights_only=True)
        stopping = extra["extra"].get("stopping", {})
        bench = pd.read_csv(results / f"benchmarks/train_model/baseline/seed{seed}.tsv", sep="\t")
        clean = pd.read_csv(results / f"evaluation/baseline/seed{seed}/clean.csv")
        fgsm = pd.read_csv(results / f"attacks/baseline/seed{seed}/fgsm.csv")
        fgsm = fgsm[(fgsm["eps"] - eps).abs() < 1e-9]
        before = clean.groupby("region")["dice"].mean()
        after = fgsm.groupby("region")["dice"].mean()
        drop = 1 - after[list(REGIONS)].mean() / before[list(REGIONS)].mean()
        rows.append({
            "candidate": name, "seed": seed,
            "stopped": stopping.get("stopped_epoch", len(extra["extra"]["log"])),
            "kept": stopping.get("weights_epoch", len(extra["extra"]["log"])),
            "train CPU-s": round(float(bench["cpu_time"].iloc[-1])),
            **{f"clean {r}": round(before[r], 3) for r in REGIONS},
            **{f"FGSM {r}": round(after[r], 3) for r in REGIONS},
            "drop of mean": f"{drop:.0%}",
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.candidates:
        run_candidate(args.workdir, name, args.seeds, args.eps, args.cores)
        rows += measure(args.workdir, name, args.seeds, args.eps)
    native = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    print(f"CPU: {cpu_model()} ({native}); baseline of the demo config, FGSM ε = {args.eps:g}")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
