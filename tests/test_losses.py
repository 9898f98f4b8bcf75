import re

import numpy as np
import pytest
import torch

from segrobust.losses import LOSS_VARIANTS, one_hot, segmentation_loss, soft_dice

N_CLASSES = 4
SHAPE = (2, N_CLASSES, 6, 5, 4)


def reference_loss(
    logits: np.ndarray, target: np.ndarray, variant: str, gamma: float, temperature: float
) -> float:
    """Independent float64 numpy version of the supplement's formula and its variants."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    probs = np.exp(log_probs)
    if target.ndim == logits.ndim - 1:
        target = np.moveaxis(np.eye(logits.shape[1])[target], -1, 1)
    losses = []
    for f, log_f, y in zip(probs, log_probs, target, strict=True):
        n = f.shape[0]
        dice = [
            (2 * (f[i] * y[i]).sum() + gamma) / (f[i].sum() + y[i].sum() + gamma) for i in range(n)
        ]
        d = sum(dice[1:]) / n if variant == "paper" else sum(dice) / n
        loss = 1 - d
        if variant == "with_background_ce":
            loss += -(y * log_f).sum(axis=0).mean()
        losses.append(loss)
    return float(np.mean(losses))


def random_inputs(seed: int, soft: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(scale=2.0, size=SHAPE))
    if soft:
        target = torch.from_numpy(rng.dirichlet(np.ones(N_CLASSES), size=(2, 6, 5, 4)))
        return logits, target.movedim(-1, 1)
    return logits, torch.from_numpy(rng.integers(0, N_CLASSES, size=(2, 6, 5, 4)))


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_loss_matches_numpy_reference(variant, soft, temperature):
    logits, target = random_inputs(seed=1, soft=soft)
    loss = segmentation_loss(logits.float(), target, variant, gamma=1e-5, temperature=temperature)
    expected = reference_loss(logits.numpy(), target.numpy(), variant, 1e-5, temperature)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_uint8_class_map_equals_int64_and_one_hot():
    logits, target = random_inputs(seed=2, soft=False)
    logits = logits.float()
    reference = segmentation_loss(logits, target, "paper")
    assert segmentation_loss(logits, target.to(torch.uint8), "paper") == reference
    torch.testing.assert_close(
        segmentation_loss(logits, one_hot(target, N_CLASSES), "paper"), reference
    )


def test_perfect_prediction():
    _, target = random_inputs(seed=3, soft=False)
    target[0, 0, 0, 0] = 3  # make sure every class occurs; absent classes also score 1 via gamma
    logits = 100.0 * one_hot(target, N_CLASSES)
    # paper: (1/N) Σ_{i=1}^{N-1} 1 = (N-1)/N, so the loss bottoms out at 1/N
    assert segmentation_loss(logits, target, "paper").item() == pytest.approx(
        1 / N_CLASSES, abs=1e-6
    )
    assert segmentation_loss(logits, target, "with_background").item() == pytest.approx(0, abs=1e-6)
    assert segmentation_loss(logits, target, "with_background_ce").item() == pytest.approx(
        0, abs=1e-6
    )


def test_wrong_prediction_scores_worse_than_right():
    _, target = random_inputs(seed=4, soft=False)
    right = 10.0 * one_hot(target, N_CLASSES)
    wrong = 10.0 * one_hot((target + 1) % N_CLASSES, N_CLASSES)
    for variant in LOSS_VARIANTS:
        assert (
            segmentation_loss(wrong, target, variant)
            > segmentation_loss(right, target, variant) + 0.5
        )


def test_soft_targets_give_gradients():
    logits, target = random_inputs(seed=5, soft=True)
    logits = logits.float().requires_grad_()
    for variant in LOSS_VARIANTS:
        logits.grad = None
        segmentation_loss(logits, target.float(), variant, temperature=2.0).backward()
        assert torch.isfinite(logits.grad).all()
        assert logits.grad.abs().sum() > 0


def test_temperature_divides_logits():
    logits, target = random_inputs(seed=6, soft=False)
    logits = logits.float()
    for variant in LOSS_VARIANTS:
        torch.testing.assert_close(
            segmentation_loss(logits, target, variant, temperature=4.0),
            segmentation_loss(logits / 4.0, target, variant, temperature=1.0),
        )


def test_high_temperature_gives_uniform_probabilities():
    noise, target = random_inputs(seed=7, soft=False)
    logits = 5.0 * one_hot(target, N_CLASSES) + noise.float()  # confident, mostly right
    uniform = torch.full(SHAPE, 1 / N_CLASSES)
    expected = 1 - soft_dice(uniform, one_hot(target, N_CLASSES), 1e-5, include_background=False)
    loss = segmentation_loss(logits, target, "paper", temperature=1e6)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert segmentation_loss(logits, target, "paper", temperature=1.0) < loss - 0.3


def test_float32_under_bf16_autocast():
    logits, target = random_inputs(seed=8, soft=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = segmentation_loss(logits.to(torch.bfloat16), target, "with_background_ce")
    assert loss.dtype == torch.float32
    expected = reference_loss(
        logits.to(torch.bfloat16).double().numpy(), target.numpy(), "with_background_ce", 1e-5, 1.0
    )
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_soft_dice_known_answer():
    probs = torch.tensor([0.5, 0.5, 0.0, 0.0]).reshape(1, 2, 2, 1)  # class 0: [.5, .5], class 1: 0
    target = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 2, 2, 1)
    # class 0: 2·0.5 / (1 + 1) = 0.5; class 1: 0 / (0 + 1) = 0 (gamma negligible)
    assert soft_dice(probs, target, 1e-12, include_background=True).item() == pytest.approx(0.25)
    assert soft_dice(probs, target, 1e-12, include_background=False).item() == pytest.approx(0.0)


def test_one_hot():
    classes = torch.tensor([[0, 3], [2, 1]], dtype=torch.uint8)[None]
    encoded = one_hot(classes, 4)
    assert encoded.shape == (1, 4, 2, 2) and encoded.dtype == torch.float32
    assert torch.equal(encoded.argmax(1), classes.long())
    assert torch.equal(encoded.sum(1), torch.ones(1, 2, 2))


def test_validation_errors():
    logits, target = random_inputs(seed=9, soft=False)
    logits = logits.float()
    with pytest.raises(ValueError, match="variant"):
        segmentation_loss(logits, target, "dice")
    with pytest.raises(ValueError, match="gamma"):
        segmentation_loss(logits, target, gamma=0.0)
    with pytest.raises(ValueError, match="temperature"):
        segmentation_loss(logits, target, temperature=0.0)
    with pytest.raises(ValueError, match="shape"):
        segmentation_loss(logits, target[:, :-1])
    with pytest.raises(ValueError, match="shape"):
        segmentation_loss(logits, one_hot(target, N_CLASSES)[:, :3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segmentation_loss(logits, 2 * one_hot(target, N_CLASSES))
    with pytest.raises(ValueError, match="0..3"):
        segmentation_loss(logits, target + 1)
    with pytest.raises(ValueError, match="integer"):
        one_hot(target.float(), N_CLASSES)
    with pytest.raises(ValueError, match="shape"):
        soft_dice(logits, logits[:1], 1e-5, include_background=True)


def test_empty_class_scores_one_and_one_spatial_axis_works():
    """A class absent from prediction and target has Dice (0 + γ) / (0 + γ) = 1 (BraTS scores
    an empty region 1); the loss is shape-agnostic down to one spatial axis."""
    probs = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # (B=1, C=2, W=2): class 1 absent
    assert soft_dice(probs, probs.clone(), 1e-5, include_background=True).item() == 1.0
    logits = torch.randn(2, 4, 7)  # (B, C, W)
    target = torch.randint(0, 4, (2, 7))
    one = torch.stack([segmentation_loss(logits[i : i + 1], target[i : i + 1]) for i in (0, 1)])
    assert torch.isfinite(one).all() and 0 < segmentation_loss(logits, target) < 1


def test_validation_messages():
    logits, target = random_inputs(seed=9, soft=False)
    logits = logits.float()
    shape = tuple(logits.shape[:1] + logits.shape[2:])
    with pytest.raises(
        ValueError, match=rf"^class-map target must have shape {re.escape(str(shape))}"
    ):
        segmentation_loss(logits, target[:, :-1])
    with pytest.raises(ValueError, match=r"^probability target values must lie in \[0, 1\]$"):
        segmentation_loss(logits, 2 * one_hot(target, N_CLASSES))
    with pytest.raises(
        ValueError, match=r"^logits must have shape \(B, C, \*spatial\), got \(2, 4\)"
    ):
        segmentation_loss(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="^class map must have an integer dtype, got torch.bool"):
        one_hot(target > 0, N_CLASSES)
