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

Like with like: both loops build the same network (:func:`segrobust.models.registry.build`), run
their convolutions on the same kernel (``--conv-kernel``, the training default: oneDNN) and in
the same precision (``--amp``, resolved by :func:`segrobust.models.device.use_amp` as training does:
``auto`` is bf16 on a CPU with native bf16). The precision and kernel each loop recorded are
printed, and the run stops if they differ.

Times are CPU seconds of this process (``time.process_time``) on one torch thread: the machine
is shared, and wall time under other workers' load varied 3x between repeats of the same loop
(one thread: no OpenMP spin-waiting counted as work). Repeats are interleaved; medians printed.

Run: ``python benchmarks/training_overhead.py`` (CPU; about 300 training steps); the smallest
run: ``--repeats 1 --subjects 2 --big-shape 0``.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segrobust.losses import segmentation_loss
from segrobust.models import registry
from segrobust.models.checkpoints import load_model
from segrobust.models.device import AMP_MODES, autocast, use_amp
from segrobust.models.kernels import CONV_KERNELS, provenance
from segrobust.training import TrainSettings, augment, open_volume, train

SHAPE = (32, 32, 32)
ARCHITECTURE = {"name": "UNet3D", "kwargs": {"base_filters": 8, "depth": 4}}
CPU = torch.device("cpu")
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


def build(kernel: str) -> torch.nn.Module:
    """The benchmark network as training builds it, convolutions on ``kernel``."""
    return registry.build(**ARCHITECTURE, input_shape=SHAPE, conv_kernel=kernel)


def loop_seconds(
    dirs: list[Path], out: Path, epochs: int, amp: str, kernel: str
) -> tuple[float, dict]:
    """CPU seconds of :func:`train` for ``epochs``, and the precision and kernel it recorded."""
    settings = TrainSettings(strategy="baseline", epochs=epochs, lr=1e-4,
                             architecture=ARCHITECTURE, amp=amp, conv_kernel=kernel)  # fmt: skip
    began = clock()
    train(settings, dirs, [], out / "m.pt", out / "log.csv", out / "ckpt.pt", device="cpu")
    seconds = clock() - began
    extra = load_model(out / "m.pt")[1]
    return seconds, {k: extra[k] for k in ("precision", "kernel")}


def project_step(dirs: list[Path], out: Path, amp: str, kernel: str) -> tuple[float, dict]:
    three, ran = loop_seconds(dirs, out / "e3", 3, amp, kernel)
    one, _ = loop_seconds(dirs, out / "e1", 1, amp, kernel)
    return (three - one) / (2 * len(dirs)), ran


def bare_step(dirs: list[Path], amp: bool, kernel: str, warmup: int = 5) -> tuple[float, dict]:
    """Per-step CPU seconds of forward, loss, backward and Adam on volumes held in memory, and
    the precision and kernel that ran (:func:`segrobust.models.kernels.provenance`)."""
    steps = 2 * len(dirs)
    torch.manual_seed(0)
    model = build(kernel).train()
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
        with autocast(CPU, amp):
            loss = segmentation_loss(model(image), label, "with_background")
        loss.backward()
        optimizer.step()
    return (clock() - began) / steps, provenance(model, CPU, amp)


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


def teacher_ratio(dirs: list[Path], amp: bool, kernel: str) -> float:
    torch.manual_seed(0)
    student, teacher = build(kernel).train(), build(kernel).eval()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)
    image = torch.from_numpy(np.load(dirs[0] / "image.npy"))[None]
    soft = torch.full((1, 4, *SHAPE), 0.25)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(CPU, amp):
            loss = segmentation_loss(student(image), soft, "with_background")
        loss.backward()
        optimizer.step()

    def forward() -> None:
        with torch.inference_mode(), autocast(CPU, amp):
            teacher(image)

    step(), forward()
    return median_time(forward, 10) / median_time(step, 10)


def main() -> None:
    defaults = TrainSettings(strategy="baseline", epochs=1, lr=1e-4)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--subjects", type=int, default=10, help="steps per epoch (batch 1)")
    parser.add_argument("--amp", choices=AMP_MODES, default=defaults.amp)
    parser.add_argument("--conv-kernel", choices=list(CONV_KERNELS), default=defaults.conv_kernel)
    parser.add_argument("--big-shape", type=int, default=128, help="loading test; 0 skips it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    amp, kernel = use_amp(args.amp, CPU), args.conv_kernel
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = write_volumes(root / "data", SHAPE, args.subjects)
        project, bare = [], []
        for r in range(args.repeats):  # interleaved: the machine's load drifts
            seconds, bare_ran = bare_step(dirs, amp, kernel)
            bare.append(seconds)
            seconds, project_ran = project_step(dirs, root / f"run{r}", args.amp, kernel)
            if project_ran != bare_ran:
                raise RuntimeError(f"unlike loops: segrobust ran {project_ran}, bare {bare_ran}")
            project.append(seconds)
        p, b = statistics.median(project), statistics.median(bare)
        kwargs = ARCHITECTURE["kwargs"]
        print(
            f"{ARCHITECTURE['name']} base {kwargs['base_filters']} depth {kwargs['depth']}, "
            f"{SHAPE[0]}³, batch 1, {args.subjects} subjects, {args.repeats} repeats, "
            f"{torch.get_num_threads()} torch thread, CPU time; amp {args.amp!r}: both loops ran "
            f"{bare_ran['precision']} with kernel {bare_ran['kernel']} (as recorded)"
        )
        print(
            f"training step: segrobust loop {p * 1e3:.1f} ms, bare torch loop {b * 1e3:.1f} ms, "
            f"ratio {p / b:.3f} (overhead {100 * (p / b - 1):+.1f}%)"
        )
        print(
            f"  per repeat: loop {[round(x * 1e3, 1) for x in project]} ms, "
            f"bare {[round(x * 1e3, 1) for x in bare]} ms"
        )
        sizes = [(f"{SHAPE[0]}³", dirs[0])]
        if args.big_shape:
            big = (args.big_shape,) * 3
            sizes.append((f"{args.big_shape}³", write_volumes(root / "data", big, 1)[0]))
        for name, d in sizes:
            npy, npy_aug, nii = loading(d)
            print(
                f"load one volume {name}: mmap .npy {npy * 1e3:.2f} ms (with augmentation "
                f"{npy_aug * 1e3:.2f} ms), .nii.gz {nii * 1e3:.1f} ms, "
                f"nii.gz / npy = {nii / npy:.0f}x"
            )
            if d == dirs[0]:
                print(f"  loading + augmentation = {100 * npy_aug / b:.2f}% of a training step")
        print(
            f"teacher forward / student step = {teacher_ratio(dirs, amp, kernel):.2f} "
            f"(per-step cost of computing soft labels on the fly; {bare_ran['precision']})"
        )


if __name__ == "__main__":
    main()
