"""Overhead of segrobust's training loop, side by side with a bare torch loop, in one run.

1. Steady-state cost per step of :func:`segrobust.training.train` (baseline strategy: reading
   memory-mapped volumes, augmentation, loss, Adam, per-epoch checkpoint and log) vs a bare
   loop (forward, loss, backward, Adam step) on the same network and volumes held in memory.
   The loop's per-step cost is (t(E = 3) − t(E = 1)) / (2 · steps per epoch): set-up cancels,
   checkpoints and logs count. Target: overhead <= 10%.
2. Per-step data loading: a volume from the memory-mapped ``image.npy`` vs decoding the same
   volume from ``.nii.gz`` with nibabel, at the benchmark size and at the paper's 128³, and the
   loader's share of a training step (does a DataLoader with workers have anything to hide?).
3. Distillation: a teacher forward (eval, no grad) relative to a student training step, the
   per-step cost that caching the teacher's logits saves.

Times are CPU seconds of this process (``time.process_time``) on one torch thread: the machine
is shared, and wall time under other workers' load varied 3x between repeats of the same loop
(one thread: no OpenMP spin-waiting counted as work). Repeats are interleaved; medians printed.

Run: ``python benchmarks/training_overhead.py`` (CPU; about 300 training steps).
"""

import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segrobust.losses import segmentation_loss
from segrobust.models.unet import UNet3D
from segrobust.training import TrainSettings, augment, open_volume, train

SHAPE = (32, 32, 32)
N_SUBJECTS = 10  # steps per epoch at batch size 1: 2 epochs = 20 timed steps
NET = {"base_filters": 8, "depth": 4}
REPEATS = 5
clock = time.process_time


def write_volumes(root: Path, shape: tuple[int, int, int], n: int) -> list[Path]:
    """``n`` random subjects in the preprocessed format, plus image.nii.gz of each."""
    rng = np.random.default_rng(0)
    dirs = []
    for i in range(n):
        d = root / f"{shape[0]}_{i}"
        d.mkdir(parents=True)
        image = rng.standard_normal((4, *shape), dtype=np.float32)
        np.save(d / "image.npy", image)
        np.save(d / "label.npy", rng.integers(0, 4, shape, dtype=np.uint8))
        nib.save(nib.Nifti1Image(np.moveaxis(image, 0, -1), np.eye(4)), d / "image.nii.gz")
        dirs.append(d)
    return dirs


def loop_seconds(dirs: list[Path], out: Path, epochs: int) -> float:
    architecture = {"name": "UNet3D", "kwargs": NET}
    settings = TrainSettings(strategy="baseline", epochs=epochs, lr=1e-4, architecture=architecture)
    began = clock()
    train(settings, dirs, [], out / "m.pt", out / "log.csv", out / "ckpt.pt", device="cpu")
    return clock() - began


def project_step(dirs: list[Path], out: Path) -> float:
    return (loop_seconds(dirs, out, 3) - loop_seconds(dirs, out, 1)) / (2 * len(dirs))


def bare_step(dirs: list[Path], steps: int = 2 * N_SUBJECTS, warmup: int = 5) -> float:
    torch.manual_seed(0)
    model = UNet3D(**NET)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = [
        (
            torch.from_numpy(np.load(d / "image.npy"))[None],
            torch.from_numpy(np.load(d / "label.npy"))[None],
        )
        for d in dirs
    ]
    for i in range(warmup + steps):
        if i == warmup:
            began = clock()
        image, label = data[i % len(data)]
        optimizer.zero_grad(set_to_none=True)
        segmentation_loss(model(image), label, "with_background").backward()
        optimizer.step()
    return (clock() - began) / steps


def median_time(fn, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        began = clock()
        fn()
        times.append(clock() - began)
    return statistics.median(times)


def loading(d: Path) -> tuple[float, float, float]:
    """Seconds to read one volume: mmap .npy, mmap .npy + augmentation, nibabel .nii.gz."""
    volume = open_volume(d)
    npy = median_time(lambda: torch.from_numpy(np.array(volume.image)))
    npy_aug = median_time(
        lambda: torch.from_numpy(np.ascontiguousarray(augment(volume.image, 1, True)))
    )
    nii = median_time(lambda: np.asanyarray(nib.load(d / "image.nii.gz").dataobj), 5)
    return npy, npy_aug, nii


def teacher_ratio(dirs: list[Path]) -> float:
    torch.manual_seed(0)
    student, teacher = UNet3D(**NET), UNet3D(**NET).eval()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)
    image = torch.from_numpy(np.load(dirs[0] / "image.npy"))[None]
    soft = torch.full((1, 4, *SHAPE), 0.25)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        segmentation_loss(student(image), soft, "with_background").backward()
        optimizer.step()

    def forward() -> None:
        with torch.inference_mode():
            teacher(image)

    step(), forward()
    return median_time(forward, 10) / median_time(step, 10)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = write_volumes(root / "data", SHAPE, N_SUBJECTS)
        big = write_volumes(root / "data", (128, 128, 128), 1)[0]
        project, bare = [], []
        for r in range(REPEATS):  # interleaved: the machine's load drifts
            bare.append(bare_step(dirs))
            project.append(project_step(dirs, root / f"run{r}"))
        p, b = statistics.median(project), statistics.median(bare)
        print(
            f"net base {NET['base_filters']} depth {NET['depth']}, {SHAPE[0]}³, batch 1, CPU fp32, "
            f"{torch.get_num_threads()} torch thread, CPU time"
        )
        print(
            f"training step: segrobust loop {p * 1e3:.1f} ms, bare torch loop {b * 1e3:.1f} ms, "
            f"ratio {p / b:.3f} (overhead {100 * (p / b - 1):+.1f}%)"
        )
        print(
            f"  per repeat: loop {[round(x * 1e3, 1) for x in project]} ms, "
            f"bare {[round(x * 1e3, 1) for x in bare]} ms"
        )
        for name, d in (("32³", dirs[0]), ("128³", big)):
            npy, npy_aug, nii = loading(d)
            print(
                f"load one volume {name}: mmap .npy {npy * 1e3:.2f} ms (with augmentation "
                f"{npy_aug * 1e3:.2f} ms), .nii.gz {nii * 1e3:.1f} ms, "
                f"nii.gz / npy = {nii / npy:.0f}x"
            )
            if d == dirs[0]:
                print(f"  loading + augmentation = {100 * npy_aug / b:.2f}% of a training step")
        print(
            f"teacher forward / student step = {teacher_ratio(dirs):.2f} "
            "(per-step cost of computing soft labels on the fly)"
        )


if __name__ == "__main__":
    main()
