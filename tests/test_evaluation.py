import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segrobust.evaluation import evaluate_attack, evaluate_clean
from segrobust.gradient_stats import evaluate_gradients
from segrobust.inference import wrap
from segrobust.labels import labels_to_classes
from segrobust.losses import segmentation_loss
from segrobust.models.unet import UNet3D
from tests.conftest import AFFINE

KEYS = ["attack", "eps", "iteration", "severity", "subject", "region"]


# Tumours of different place, size and make-up (the last without enhancing tumour), so that
# scoring one subject's prediction against another subject's labels cannot pass unnoticed.
ANATOMIES = [((0.3, 0.3, 0.0), 0.5, True), ((-0.35, 0.0, 0.25), 0.3, True),
             ((0.0, -0.3, -0.3), 0.4, False)]  # fmt: skip


def anatomy(shape, centre, radius, enhancing, seed) -> tuple[np.ndarray, np.ndarray]:
    """z-scored image (4, *shape) and BraTS labels of a brain ellipsoid with a spherical
    tumour (oedema, enhancing shell when ``enhancing``, necrotic core) at ``centre``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    distance = np.sqrt(((grid - np.reshape(centre, (3, 1, 1, 1))) ** 2).sum(0))
    labels = np.zeros(shape, np.uint8)
    labels[(distance < radius) & brain] = 2
    if enhancing:
        labels[(distance < 0.6 * radius) & brain] = 4
    labels[(distance < 0.3 * radius) & brain] = 1
    image = np.stack([rng.normal(500 + 100 * c, 30, shape) + 200 * labels for c in range(4)])
    image = (image * brain).astype(np.float32)
    image[:, brain] -= image[:, brain].mean(1, keepdims=True)
    image[:, brain] /= image[:, brain].std(1, keepdims=True)
    return image, labels


def write_preprocessed(root: Path) -> list[Path]:
    """Preprocessed subjects of :data:`ANATOMIES` (z-scored, classes, brain mask, meta.json)."""
    dirs = []
    for i, (centre, radius, enhancing) in enumerate(ANATOMIES):
        image, labels = anatomy((16, 16, 16), centre, radius, enhancing, seed=i)
        d = root / f"S{i}"
        d.mkdir(parents=True)
        np.save(d / "image.npy", image)
        np.save(d / "label.npy", labels_to_classes(labels).astype(np.uint8))
        np.save(d / "mask.npy", image.any(0))
        (d / "meta.json").write_text(json.dumps({"affine": AFFINE.tolist()}))
        dirs.append(d)
    return dirs


def settings(batch: int) -> dict:
    iterative = {"eps": 0.05, "alpha": 0.02, "steps": 3, "target_class": 1}
    return {
        "loss": "with_background", "gamma": 1e-5, "mask": True, "batch": batch, "eval_batch": 2,
        "fgsm": {"epsilons": [0.02, 0.05]}, "ifgsm": iterative, "tifgsm": iterative,
        "pgd": {"eps": 0.05, "alpha": 0.02, "steps": 2, "restarts": 2},
        "segpgd": {"eps": 0.05, "alpha": 0.02, "steps": 2},
        "pgd_large": {"eps": 0.5, "alpha": 0.2, "steps": 2, "restarts": 1},
        "random_sign": {"epsilons": [0.05]},
        "realistic": {"kinds": ["motion", "gaussian_noise"], "severities": [3]},
        "examples": {"subjects": ["S1"], "eps": [0.05]}, "table1_iteration": 2,
    }  # fmt: skip


@pytest.fixture(scope="module")
def subjects(tmp_path_factory) -> list[Path]:
    return write_preprocessed(tmp_path_factory.mktemp("preprocessed"))


@pytest.fixture(scope="module")
def model(subjects) -> UNet3D:
    """A UNet trained briefly on the subjects: its predictions follow each one's tumour."""
    torch.manual_seed(0)
    net = UNet3D(base_filters=4, depth=3, dropout=0.3)
    x = torch.from_numpy(np.stack([np.load(d / "image.npy") for d in subjects]))
    y = torch.from_numpy(np.stack([np.load(d / "label.npy") for d in subjects])).long()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        segmentation_loss(net(x), y, "with_background").backward()
        optimizer.step()
    return net.eval()


def run(attack, model, subjects, batch, examples_dir=None) -> pd.DataFrame:
    frame = evaluate_attack(
        attack, model, "m", subjects, settings(batch), torch.device("cpu"), 7,
        examples_dir=examples_dir, tags={"seed": 1},
    )  # fmt: skip
    return frame.sort_values(KEYS).reset_index(drop=True)


@pytest.mark.parametrize(
    "attack", ["fgsm", "ifgsm", "tifgsm", "pgd", "segpgd", "pgd_large", "random_sign", "realistic"]
)
def test_batched_subjects_get_the_attack_each_gets_alone(attack, model, subjects):
    alone, together = run(attack, model, subjects, 1), run(attack, model, subjects, 2)
    pd.testing.assert_frame_equal(alone[KEYS], together[KEYS])
    assert set(alone["subject"]) == {"S0", "S1", "S2"}
    assert alone["seed"].eq(1).all() and alone["model"].eq("m").all()
    # Per subject and region the same scores: on a CPU one sample's convolution does not depend
    # on its batch, so the attack (and so the prediction) is the same to float rounding; a
    # single voxel predicted differently would move a Dice here by more than 0.01.
    for column in ("dice", "hd95", "nsd", "psnr", "linf"):
        np.testing.assert_allclose(
            together[column], alone[column], rtol=1e-6, atol=1e-6, err_msg=column
        )
    # the subjects' scores differ: their anatomy does, and the net follows it
    wt = alone[(alone["region"] == "WT") & (alone["iteration"] == alone["iteration"].max())]
    assert wt.groupby("subject")["dice"].mean().round(2).nunique() == 3


def test_attack_changes_predictions_and_saves_examples(model, subjects, tmp_path):
    clean = evaluate_clean(model, "m", subjects, torch.device("cpu"))
    attacked = run("fgsm", model, subjects, 2, examples_dir=tmp_path)
    at = attacked[attacked["eps"] == 0.05].set_index(["subject", "region"])["dice"]
    before = clean.set_index(["subject", "region"])["dice"].reindex(at.index)
    assert (before != at).any()
    assert attacked["linf"].max() == pytest.approx(0.05, rel=1e-5)
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["S1_fgsm_eps0.05_it1_image.nii.gz", "S1_fgsm_eps0.05_it1_pred.nii.gz"]


def test_unknown_attack_is_refused(model, subjects):
    with pytest.raises(ValueError, match="unknown attack 'fgs'"):
        run("fgs", model, subjects, 1)


GRADIENT_FAMILIES = ["fgsm", "ifgsm", "tifgsm", "pgd", "segpgd", "pgd_large"]


def _exports(model: torch.nn.Module, tmp_path: Path) -> dict[str, torch.jit.ScriptModule]:
    """The TorchScript exports a user may bring of ``model``, each saved and loaded back as
    :func:`segrobust.models.checkpoints.load_model` loads an external model."""
    model.eval()
    example = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        no_grad_trace = torch.jit.trace(model, example)
    exports = {
        "traced": torch.jit.trace(model, example),
        "scripted": torch.jit.script(model),
        "frozen_traced": torch.jit.freeze(torch.jit.trace(model, example)),
        "frozen_scripted": torch.jit.freeze(torch.jit.script(model)),
        "no_grad_traced": no_grad_trace,
    }
    for name, module in exports.items():
        torch.jit.save(module, tmp_path / f"{name}.ts")
    return {name: torch.jit.load(tmp_path / f"{name}.ts").eval() for name in exports}


def _everything(model, subjects, amp, inference, families):
    """Clean Dice, the attack ``families`` and the audit's gradient shares of ``model``."""
    cpu = torch.device("cpu")
    model = wrap(model, inference)
    frames = {"none": evaluate_clean(model, "m", subjects, cpu, amp=amp)}
    for attack in families:
        frames[attack] = evaluate_attack(
            attack, model, "m", subjects, settings(2), cpu, 7, amp=amp, tags={"seed": 1}
        )
    frames["audit"] = evaluate_gradients(model, "m", subjects, settings(1), cpu, amp=amp)
    return frames


def check_exports(model, subjects, amp, inference, families, tmp_path):
    """Traced, scripted, frozen and no_grad TorchScript exports of the project's network are
    scored, attacked and audited as the network itself. Under bf16 an inference-mode scoring
    forward followed by a gradient used to fail inside the TorchScript interpreter; a frozen
    module (no parameters) failed clean evaluation."""
    eager = _everything(model, subjects, amp, inference, families)
    for name, export in _exports(model, tmp_path).items():
        got = _everything(export, subjects, amp, inference, families)
        clean = got["none"]["dice"].to_numpy()
        np.testing.assert_allclose(clean, eager["none"]["dice"], atol=0.02, err_msg=name)
        for attack in families:
            frame = got[attack]
            assert np.isfinite(frame["dice"]).all(), (name, attack)
            np.testing.assert_allclose(
                frame["linf"], eager[attack]["linf"], rtol=1e-4, err_msg=f"{name} {attack}"
            )
        shares = got["audit"][["zero_gradient", "saturated"]].to_numpy()
        np.testing.assert_allclose(shares, eager["audit"][["zero_gradient", "saturated"]],
                                   atol=0.01, err_msg=name)  # fmt: skip


def test_torchscript_exports_under_bf16(model, subjects, tmp_path):
    """bf16 forced on (so on any CPU): a scoring forward, then a gradient, then the audit."""
    check_exports(model, subjects, True, None, ["fgsm", "pgd"], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("inference", [None, {"roi_size": [8, 8, 8], "overlap": 0.5}],
                         ids=["whole", "windows"])  # fmt: skip
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_torchscript_exports_survive_every_family(model, subjects, amp, inference, tmp_path):
    """Every gradient family, in fp32 and bf16, over the whole volume and sliding windows."""
    check_exports(model, subjects, amp, inference, GRADIENT_FAMILIES, tmp_path)


class BatchOne(torch.nn.Module):
    """``net`` followed by reshapes that a trace at batch 1 freezes to batch 1."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        shape = [int(s) for s in y.shape]  # constants in a trace
        return y.reshape(shape[0], -1).reshape(shape)


def test_a_batch_one_trace_is_attacked_one_subject_at_a_time(model, subjects, caplog):
    example = torch.randn(1, 4, 16, 16, 16)
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(BatchOne(model.eval()), example)
    with pytest.raises(RuntimeError, match="shape"):  # what an attack used to fail with
        traced(torch.randn(2, 4, 16, 16, 16))
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING", logger="segrobust.evaluation"):
        batched = evaluate_attack("fgsm", traced, "t", subjects, settings(2), cpu, 7)
    assert "attacks.batch: 2" in caplog.text and "model t" in caplog.text
    alone = evaluate_attack("fgsm", model, "t", subjects, settings(1), cpu, 7)
    pd.testing.assert_frame_equal(batched, alone)


def test_a_model_that_fails_on_one_volume_is_named(model, subjects):
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model(x).reshape(3, -1)

    broken = Broken()
    with pytest.raises(ValueError, match="model broken fails on one volume of shape"):
        evaluate_attack("pgd", broken, "broken", subjects, settings(2), torch.device("cpu"), 7)
