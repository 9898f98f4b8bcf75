"""Cost per subject of an nnU-Net result folder and a MONAI bundle as segrobust attacks them.

Imports each model as the workflow does (``segrobust.external``), then on one random volume
of ``--shape`` (segrobust's channel order) times, in CPU seconds of this process (fair on a
shared machine), a clean forward and one FGSM step (input gradient + scoring forward), for
the nnU-Net model with and without mirroring, with all its folds and with the first only.

    python benchmarks/shipped_models.py --nnunet RESULT_FOLDER --bundle BUNDLE_DIR \\
        [--shape 44 36 40] [--threads 1]
"""

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from segrobust import attacks, external
from segrobust.inference import wrap
from segrobust.losses import segmentation_loss
from segrobust.models.checkpoints import load_model
from segrobust.models.device import cpu_model


def cost(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """CPU seconds of a clean forward and of one FGSM step (gradient, then a scoring forward)."""
    loss = partial(segmentation_loss, variant="with_background")
    start = time.process_time()
    with torch.no_grad():
        target = model(x).argmax(1)
    clean = time.process_time() - start
    start = time.process_time()
    adversarial = attacks.fgsm(model, x, target, loss, 0.05)
    attacks.forward_only(model, adversarial)
    return clean, time.process_time() - start


def imported(entry: dict, directory: Path) -> torch.nn.Module:
    path = directory / f"{entry['name']}.pt"
    external.write_model(entry, path)
    return wrap(load_model(path)[0], external.settings(entry)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnunet", type=Path)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--shape", type=int, nargs=3, default=[44, 36, 40])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 4, *args.shape, generator=torch.Generator().manual_seed(0))
    x[..., :2, :, :] = 0  # background, as around a brain
    conventions = {"modalities": None, "normalization": None, "output": None, "inference": None}
    models = {}
    if args.nnunet:
        folds = sorted(int(p.name.split("_")[1]) for p in args.nnunet.glob("fold_[0-9]*"))
        for mirroring in (True, False):
            for chosen in (folds, folds[:1]):
                spec = {"folder": str(args.nnunet), "configuration": "3d_fullres",
                        "folds": chosen, "checkpoint": "checkpoint_final.pth",
                        "mirroring": mirroring, "step_size": 0.5, "gaussian": True,
                        "labels": [0, 2, 1, 4]}  # fmt: skip
                label = f"nnU-Net {len(chosen)} fold(s), mirroring {'on' if mirroring else 'off'}"
                models[label] = {"name": "nn", "nnunet": spec, **conventions}
    if args.bundle:
        models["MONAI bundle"] = {"name": "bundle", "bundle": str(args.bundle), **conventions}
    print(f"CPU: {cpu_model()}; {args.threads} thread(s); volume {args.shape}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, entry in models.items():
            clean, fgsm = cost(imported(entry, Path(tmp)), x)
            print(f"{label}: clean forward {clean:.2f} CPU-s, one FGSM step {fgsm:.2f} CPU-s")


if __name__ == "__main__":
    main()
