"""Why does FGSM adversarial training gain so little? Ablations on a finished demo run.

Trains variants of one replicate's FGSM-trained model with :func:`segrobust.training.train`
on the preprocessed cohort and split of an existing results folder (nothing is preprocessed
again), then reports for each the mean Dice per region over the test subjects on the clean
input and under FGSM at the workflow's attack settings (the paper's loss, γ = 1e-5, no mask),
the gain over the same-seed baseline and the training CPU time.

The reference settings are read from the run's own ``models/adv_eps<ε>/seed<seed>/model.pt``
(so the variants differ from the workflow's model in the named setting only); that model and
the same-seed baseline are evaluated as they are, not retrained. Variants, in order of
priority (``--variants`` picks some):

- ``train_mode``: examples crafted with dropout on (``example_mode: train``)
- ``accumulate``: one Adam step on the accumulated gradient instead of two (``update``)
- ``accumulate_train``: both, the two-pass scheme that reuses the clean pass's ∇ₓ
- ``epochs_x2``: twice the epochs
- ``eps0.1``: FGSM training at ε = 0.1 (still attacked at the reference ε)
- ``pgd_k3``: PGD training (k = 3, α = 2.5·ε/k, random start), for its CPU time and gain
- ``baseline_w16``, ``fgsm_w16``: baseline and FGSM training at twice the width (16 filters)
- ``baseline_epochs_x2``: the baseline at twice the epochs, the reference for ``epochs_x2``

Each finished variant is appended to ``<out>/results.csv`` (one row per variant and region,
with the time it was ``measured`` and the ``run`` that measured it) and skipped when the script
runs again, so it can be stopped and resumed (an interrupted training resumes from its
checkpoint); models and logs are kept under ``<out>/models``. The report marks each row
measured by this run ``this run`` and each row reused from an earlier run with its date (a
table of an older version of this script, without dates, says "date not recorded"). Several
processes may share ``<out>``: each variant is claimed by the first to start it (a process
killed mid-training leaves ``models/<variant>/claimed``: delete it to resume). ``cpu_s`` is
the training's CPU time in this process, ``cpu_s_per_epoch`` the same per epoch trained here.
``--loss-check`` instead evaluates the reference models (and finished variants) under FGSM
crafted with the evaluation's loss and with each model's own training loss (is the defence
specific to the loss its examples were made with?); with ``--loss-check-split train`` on the
training subjects (does the training fit its own adversarial examples?). ``--step-cost N``
instead times N training steps of the baseline, the reference FGSM training, its variants and
PGD training on the same batches (CPU seconds per step). Both are cheap.
One thread, CPU::

    nice -n 10 python benchmarks/fgsm_training_ablation.py --results /tmp/ci1/results \\
        --out /tmp/fgsm_ablation
"""

import argparse
import csv
import logging
import time
from dataclasses import asdict, replace
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segrobust.data import open_volume, read_split
from segrobust.evaluation import evaluate_attack, evaluate_clean
from segrobust.labels import REGIONS
from segrobust.losses import segmentation_loss
from segrobust.models import registry
from segrobust.models.checkpoints import load_model
from segrobust.models.device import autocast
from segrobust.strategies import StepContext
from segrobust.training import (
    TrainSettings,
    epoch_batches,
    load_checkpoint,
    make_step,
    train,
)

EPS = 0.05
ATTACK = {  # the workflow's FGSM attack settings (schema defaults)
    "loss": "paper",
    "gamma": 1e-5,
    "mask": False,
    "batch": 4,
    "eval_batch": 1,
    "fgsm": {"epsilons": [EPS]},
    "examples": {"eps": [], "subjects": []},
}
COLUMNS = (
    "variant", "region", "clean", "fgsm", "cpu_s", "cpu_s_per_epoch", "settings", "measured", "run",
)  # fmt: skip
UNDATED = "date not recorded"


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def variants(fgsm: TrainSettings, baseline: TrainSettings) -> dict[str, TrainSettings]:
    """The ablations, each a change of the reference FGSM (or baseline) settings."""
    wide = {**fgsm.architecture, "kwargs": {**fgsm.architecture["kwargs"], "base_filters": 16}}
    k = 3
    return {
        "train_mode": replace(fgsm, example_mode="train"),
        "accumulate": replace(fgsm, update="accumulate"),
        "accumulate_train": replace(fgsm, update="accumulate", example_mode="train"),
        "epochs_x2": replace(fgsm, epochs=2 * fgsm.epochs),
        "eps0.1": replace(fgsm, epsilon=0.1),
        "pgd_k3": replace(
            fgsm, strategy="pgd_adversarial", pgd_steps=k, pgd_step_size=2.5 * fgsm.epsilon / k
        ),
        "baseline_w16": replace(baseline, architecture=wide),
        "fgsm_w16": replace(fgsm, architecture=wide),
        "baseline_epochs_x2": replace(baseline, epochs=2 * baseline.epochs),
    }


def evaluate(
    model_path: Path, test_dirs: list[Path], loss: tuple[str, float] | None = None
) -> dict[str, tuple[float, float]]:
    """(clean, FGSM ε) mean Dice per region over ``test_dirs``; FGSM with the workflow's
    attack loss, or ``loss`` = (variant, γ)."""
    model, _ = load_model(model_path)
    model.eval()
    device = torch.device("cpu")
    clean = evaluate_clean(model, "m", test_dirs, device)
    settings = ATTACK if loss is None else {**ATTACK, "loss": loss[0], "gamma": loss[1]}
    attacked = evaluate_attack("fgsm", model, "m", test_dirs, settings, device, seed=0)
    means = [frame.groupby("region")["dice"].mean() for frame in (clean, attacked)]
    return {r: (float(means[0][r]), float(means[1][r])) for r in REGIONS}


def append(
    out_csv: Path, variant: str, scores: dict, cpu_s: float, epochs: int, settings: dict, run: str
) -> None:
    new = not out_csv.exists()
    per_epoch = f"{cpu_s / epochs:.1f}" if epochs else ""
    measured = now()
    with open(out_csv, "a", newline="") as stream:
        writer = csv.writer(stream)
        if new:
            writer.writerow(COLUMNS)
        for region, (clean, fgsm) in scores.items():
            writer.writerow([variant, region, clean, fgsm, f"{cpu_s:.0f}", per_epoch, settings,
                             measured, run])  # fmt: skip


def add_dates(out_csv: Path) -> None:
    """Give a table of an older version of this script (no dates) the columns ``measured`` and
    ``run``, marked as undated."""
    if not out_csv.exists():
        return
    df = pd.read_csv(out_csv)
    if set(COLUMNS) <= set(df.columns):
        return
    for column in ("measured", "run"):
        if column not in df:
            df[column] = UNDATED
    df[list(COLUMNS)].to_csv(out_csv, index=False)


def finished(out_csv: Path) -> set[str]:
    return set(pd.read_csv(out_csv)["variant"]) if out_csv.exists() else set()


def claim(folder: Path) -> bool:
    """True if this process is the first to claim ``folder``'s variant."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / "claimed").open("x").close()
    except FileExistsError:
        return False
    return True


def report(out_csv: Path, run: str) -> str:
    """Clean and FGSM Dice per variant and region, the FGSM gain over the baseline, and when
    each row was measured: ``this run`` or the date of the earlier run it is reused from."""
    df = pd.read_csv(out_csv)
    table = df.pivot_table(index="variant", columns="region", values=["clean", "fgsm"])
    base = table.loc["baseline", "fgsm"]
    gain = table["fgsm"] - base
    gain.columns = [f"gain_{c}" for c in gain.columns]
    first = df.groupby("variant")[["cpu_s", "cpu_s_per_epoch", "measured", "run"]].first()
    first["measured"] = [
        "this run" if r == run else (m if m == UNDATED else f"reused, {m}")
        for m, r in first[["measured", "run"]].itertuples(index=False)
    ]
    table.columns = [f"{a}_{r}" for a, r in table.columns]
    order = list(dict.fromkeys(df["variant"]))
    out = table.join(gain).join(first.drop(columns="run")).loc[order].round(3)
    reused = (out["measured"] != "this run").sum()
    note = f"\n{reused} of {len(out)} rows reused from earlier runs in {out_csv}" if reused else ""
    return out.to_string() + note


def step_cost(
    todo: dict[str, TrainSettings], reference: dict[str, TrainSettings], dirs: list[Path], n: int
) -> str:
    """CPU seconds per training step of each strategy, on the same ``n`` batches."""
    volumes = [open_volume(d) for d in dirs]
    rows = {}
    chosen = {**reference, **{k: todo[k] for k in ("train_mode", "accumulate_train", "pgd_k3")}}
    kernels = {s.conv_kernel for s in chosen.values()}
    for name, settings in chosen.items():
        torch.manual_seed(0)
        model = registry.build(**settings.architecture, conv_kernel=settings.conv_kernel,
                               input_shape=volumes[0].image.shape[1:])  # fmt: skip
        model.train()
        ctx = StepContext(
            torch.optim.Adam(model.parameters(), lr=settings.lr),
            partial(segmentation_loss, variant=settings.loss_variant, gamma=settings.gamma),
            partial(autocast, torch.device("cpu"), False),
            torch.Generator().manual_seed(0),
        )
        step = make_step(settings)
        batches = epoch_batches(volumes[: n + 1], 1, np.random.default_rng(0), True)
        step(model, *next(batches)[:2], ctx)  # warm-up
        began = time.process_time()
        for image, label, _ in batches:
            step(model, image, label, ctx)
        rows[name] = (time.process_time() - began) / n
    base = rows["baseline"]
    header = f"{n} steps each, batch 1, fp32 (no autocast), conv kernel {', '.join(kernels)}"
    return "\n".join(
        [header, *(f"{k:20s} {v:6.3f} CPU-s/step  {v / base:4.2f}x baseline"
                   for k, v in rows.items())]
    )  # fmt: skip


def loss_check(models: dict[str, Path], test_dirs: list[Path]) -> str:
    """FGSM Dice per region with the evaluation's attack loss and the model's training loss."""
    lines = []
    for name, path in models.items():
        train_settings = load_model(path)[1]["settings"]
        own = (train_settings["loss_variant"], train_settings["gamma"])
        for label, loss in (("attack loss " + ATTACK["loss"], None), (f"training loss {own}", own)):
            scores = evaluate(path, test_dirs, loss)
            dice = "  ".join(f"{r} {scores[r][1]:.3f}" for r in REGIONS)
            lines.append(f"{name:20s} FGSM {EPS:g}, {label:40s} {dice}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="a finished demo run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--variants", nargs="*", help="default: all, in order of priority")
    parser.add_argument("--step-cost", type=int, default=0, metavar="N", help="time N steps only")
    parser.add_argument("--loss-check", action="store_true", help="FGSM with each training loss")
    parser.add_argument("--loss-check-split", choices=["test", "train"], default="test")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    res, out = args.results, args.out
    out.mkdir(parents=True, exist_ok=True)
    out_csv = out / "results.csv"
    run = now()  # this run's rows carry its start time
    add_dates(out_csv)
    done = finished(out_csv)
    split = res / "split.csv"
    train_dirs, val_dirs, test_dirs = (
        [res / "preprocessed" / s for s in read_split(split, part)]
        for part in ("train", "val", "test")
    )
    reference = {
        "baseline": res / "models" / "baseline" / f"seed{args.seed}" / "model.pt",
        f"fgsm_eps{EPS:g}": res / "models" / f"adv_eps{EPS:g}" / f"seed{args.seed}" / "model.pt",
    }
    settings = {}
    for name, path in reference.items():
        settings[name] = TrainSettings.from_dict(load_model(path)[1]["settings"])
    todo = variants(settings[f"fgsm_eps{EPS:g}"], settings["baseline"])
    if args.loss_check:
        trained = {d.name: d / "model.pt" for d in sorted((out / "models").glob("*"))}
        models = {**reference, **{k: v for k, v in trained.items() if v.exists()}}
        dirs = test_dirs if args.loss_check_split == "test" else train_dirs
        print(loss_check(models, dirs))
        return
    if args.step_cost:
        print(step_cost(todo, settings, train_dirs, args.step_cost))
        return
    for name, path in reference.items():
        if name not in done:
            scores = evaluate(path, test_dirs)
            append(out_csv, name, scores, 0.0, 0, asdict(settings[name]), run)
    for name in args.variants or list(todo):
        folder = out / "models" / name
        if name in finished(out_csv) or not claim(folder):
            continue
        ckpt = folder / "ckpt.pt"
        start = load_checkpoint(ckpt)["epoch"] if ckpt.exists() else 0
        began = time.process_time()
        try:
            train(todo[name], train_dirs, val_dirs, folder / "model.pt", folder / "log.csv",
                  ckpt, device="cpu")  # fmt: skip
        finally:
            (folder / "claimed").unlink()
        cpu_s = time.process_time() - began
        scores = evaluate(folder / "model.pt", test_dirs)
        append(out_csv, name, scores, cpu_s, todo[name].epochs - start, asdict(todo[name]), run)
        logging.info("%s done in %.0f CPU-s\n%s", name, cpu_s, report(out_csv, run))
    print(report(out_csv, run))


if __name__ == "__main__":
    main()
