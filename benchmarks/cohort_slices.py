"""Generation cost of the synthetic cohort, and slices of its subjects to look at.

Writes the cohort of a config (default: the demo's) with ``segrobust.cohort.write_cohort``
into a temporary folder, prints each subject's generation cost and the total (CPU seconds of
this process, template loading included), then draws:

- ``<out>/subjects.png``: for the first subjects, the four raw contrasts and FLAIR with the
  labels, at the axial slice with most tumour;
- ``<out>/fig1_like.png`` and ``<out>/fig5_like.png``: one subject preprocessed as the workflow
  does (N4, resize, z-score) and drawn by ``segrobust.montages.figure1`` / ``figure5`` with the
  true labels standing in for the predictions, i.e. what Figs. 1 and 5 look like on this cohort.

Usage: python benchmarks/cohort_slices.py --out /tmp/cohort [--config config/config.yaml]
       [--subjects 60] [--show 4] [--anatomy template|phantom]
"""

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure

from segrobust.cohort import cohort_plan, write_cohort
from segrobust.data import FILE_KINDS, Subject
from segrobust.labels import MODALITIES
from segrobust.montages import Segmented, figure1, figure5
from segrobust.plots import save_figure
from segrobust.preprocessing import preprocess_subject

ROOT = Path(__file__).resolve().parents[1]


def subjects_figure(root: Path, plan: list[tuple[str, str]]) -> Figure:
    """Rows: subjects; columns: T1, T1ce, T2, FLAIR, FLAIR + labels (raw data)."""
    import nibabel as nib

    fig = Figure(figsize=(10, 2.1 * len(plan)), layout="constrained")
    axes = fig.subplots(len(plan), len(MODALITIES) + 1, squeeze=False)
    colours = np.array([[0, 0, 0, 0], [0, 0.45, 0.7, 0.6], [0.94, 0.89, 0.26, 0.6],
                        [0, 0, 0, 0], [0.84, 0.37, 0, 0.6]])  # fmt: skip
    for row, (sid, grade) in zip(axes, plan, strict=True):
        folder = root / grade / sid
        labels = np.asanyarray(nib.load(folder / f"{sid}_seg.nii.gz").dataobj)
        z = int(np.argmax((labels > 0).sum(axis=(0, 1))))
        for ax, m in zip(row, (*MODALITIES, "flair"), strict=True):
            img = np.asanyarray(nib.load(folder / f"{sid}_{m}.nii.gz").dataobj)[:, :, z].T
            ax.imshow(img, cmap="gray", vmin=0, vmax=np.percentile(img[img > 0], 99.5))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{m} ({sid[-6:-2]}, {grade}, z {z})", fontsize=7)
        row[-1].imshow(colours[labels[:, :, z].T], interpolation="nearest")
        row[-1].set_title("FLAIR + labels 1/2/4", fontsize=7)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--subjects", type=int, default=None, help="default: the config's")
    parser.add_argument("--show", type=int, default=4, help="subjects drawn in subjects.png")
    parser.add_argument("--anatomy", default=None, help="default: the config's")
    args = parser.parse_args()
    logging.basicConfig(format="%(message)s")
    logging.getLogger("segrobust").setLevel(logging.INFO)

    config = yaml.safe_load(args.config.read_text())
    syn = config["data"]["synthetic"]
    n = args.subjects or syn["n_subjects"]
    anatomy = args.anatomy or syn.get("anatomy", "template")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.process_time()
        write_cohort(root, n, tuple(syn["shape"]), tuple(syn["spacing"]), syn["lgg_fraction"],
                     seed=config["seed"], anatomy=anatomy)  # fmt: skip
        cpu = time.process_time() - start
        print(f"{n} subjects ({anatomy}, {syn['shape']} at {syn['spacing']} mm): {cpu:.1f} CPU s")
        plan = cohort_plan(n, syn["lgg_fraction"])
        save_figure(subjects_figure(root, plan[: args.show]), args.out / "subjects", dpi=200)

        sid, grade = plan[0]
        subject = Subject(sid, grade, {k: root / grade / sid / f"{sid}_{k}.nii.gz"
                                       for k in FILE_KINDS})  # fmt: skip
        pre = config["preprocess"]
        preprocess_subject(subject, root / "pre", tuple(pre["shape"]), pre["standardise"],
                           pre["n4"])  # fmt: skip
        image = np.load(root / "pre" / "image.npy")
        truth = np.load(root / "pre" / "label.npy").astype(np.int64)
        example = Segmented(image, truth)
        save_figure(figure1(truth, {"none": example}), args.out / "fig1_like", dpi=200)
        fig5 = figure5(image, truth, {"baseline": truth}, {"baseline": example}, eps=0.05)
        save_figure(fig5, args.out / "fig5_like", dpi=200)
    print(f"figures in {args.out}")


if __name__ == "__main__":
    main()
