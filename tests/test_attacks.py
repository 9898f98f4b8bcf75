import copy
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from segrobust import attacks
from segrobust.losses import segmentation_loss
from segrobust.metrics import image_quality
from segrobust.models.device import autocast
from segrobust.models.unet import UNet3D

SIZE = 16
LOSS = partial(segmentation_loss, variant="with_background")


def make_model(seed: int = 0) -> UNet3D:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return UNet3D(base_filters=4, depth=3, dropout=0.3)


def make_batch(seed: int, batch: int = 2, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, size, generator=g)
    x[1:] *= 3.0  # samples and channels on different intensity scales
    x[:, 2] *= 0.5
    y = torch.randint(0, 4, (batch, size, size, size), generator=g)
    return x, y


def brain_mask(x: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(x.shape[0], 1, *x.shape[2:], dtype=torch.bool)
    mask[..., 4:12, 4:12, 4:12] = True
    return mask


def assert_within_ball(x_adv, x, eps):
    excess = (x_adv - x).abs() - eps * attacks.relative_scale(x)
    assert excess.max() <= 1e-6 * attacks.relative_scale(x).max()


@pytest.fixture(scope="module")
def model() -> UNet3D:
    return make_model()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return make_batch(0)


# --- FGSM and its sweep -----------------------------------------------------------------------


def test_fgsm_matches_independent_gradient(model, batch):
    x, y = batch
    eps = 0.05
    x_adv = attacks.fgsm(model, x, y, LOSS, eps)

    reference = copy.deepcopy(model).eval()
    x_ref = x.clone().requires_grad_(True)
    logits = reference(x_ref)
    loss = sum(LOSS(logits[i : i + 1], y[i : i + 1]) for i in range(2))
    loss.backward()
    eps_abs = eps * x.abs().amax(dim=(2, 3, 4), keepdim=True)
    expected = x + eps_abs * x_ref.grad.sign()
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=0)
    assert (x_adv != x).float().mean() > 0.5


def test_attacks_leave_the_model_untouched():
    model = make_model().train()
    x, y = make_batch(1)
    attacks.fgsm(model, x, y, LOSS, 0.05)
    for it in attacks.linf_iterates(model, x, y, LOSS, 0.05, 0.01, 2):
        assert not it.logits.requires_grad
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_frozen_parameters_give_the_same_input_gradient(model, batch):
    """Attacks freeze the weights (no weight gradient computed); ∇x is bitwise the same."""
    x, y = batch
    objective = attacks._loss_objective(LOSS)
    model.eval()
    trained, _ = attacks.input_gradient(model, x, y, objective)
    with attacks.attack_mode(model):
        assert not any(p.requires_grad for p in model.parameters())
        frozen, _ = attacks.input_gradient(model, x, y, objective)
    assert torch.equal(trained, frozen)
    assert all(p.requires_grad for p in model.parameters())


def test_per_sample_generators_make_starts_independent_of_the_batch(model, batch):
    x, y = batch
    args = (LOSS, 0.1, 0.02, 2)
    together = attacks.pgd(model, x, y, *args, restarts=2, generator=[
        torch.Generator().manual_seed(s) for s in (5, 6)])  # fmt: skip
    for i, s in enumerate((5, 6)):
        alone = attacks.pgd(model, x[i : i + 1], y[i : i + 1], *args, restarts=2,
                            generator=[torch.Generator().manual_seed(s)])  # fmt: skip
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-5, atol=1e-5)
    one = attacks.uniform_start(x[:1], 0.1, torch.Generator().manual_seed(5), None)
    listed = attacks.uniform_start(x[:1], 0.1, [torch.Generator().manual_seed(5)], None)
    assert torch.equal(one, listed)  # one sample: the same draw either way


def test_fgsm_sweep_equals_single_fgsm(model, batch):
    x, y = batch
    epsilons = [0.0, 0.01, 0.05, 0.1]
    sweep = list(attacks.fgsm_sweep(model, x, y, LOSS, epsilons))
    assert [it.eps for it in sweep] == epsilons
    model.eval()
    for it in sweep:
        torch.testing.assert_close(
            it.x_adv, attacks.fgsm(model, x, y, LOSS, it.eps), rtol=0, atol=0
        )
        with torch.no_grad():
            torch.testing.assert_close(it.logits, model(it.x_adv))
    torch.testing.assert_close(sweep[0].x_adv, x, rtol=0, atol=0)


@pytest.mark.parametrize("eval_batch", [2, 3])
def test_fgsm_sweep_batched_evaluation(model, batch, eval_batch):
    x, y = batch
    epsilons = [0.02, 0.0, 0.01, 0.05, 0.1]
    single = list(attacks.fgsm_sweep(model, x, y, LOSS, epsilons))
    batched = list(attacks.fgsm_sweep(model, x, y, LOSS, epsilons, eval_batch=eval_batch))
    assert [it.eps for it in batched] == epsilons
    for a, b in zip(single, batched, strict=True):
        assert torch.equal(a.x_adv, b.x_adv)
        torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)
    assert all(
        it.logits is None for it in attacks.fgsm_sweep(model, x, y, LOSS, epsilons, evaluate=False)
    )


def test_fgsm_relative_budget_matches_quality_metrics(model, batch):
    x, y = batch
    eps = 0.05
    x_adv = attacks.fgsm(model, x, y, LOSS, eps)
    for i in range(x.shape[0]):
        quality = image_quality(x[i].numpy(), x_adv[i].numpy())
        assert quality["linf"] == pytest.approx(eps, rel=1e-5)
        assert 0 < quality["rmse"] <= eps * (1 + 1e-5)
        assert quality["psnr"] >= -20 * np.log10(eps) - 1e-3


# --- iterative attacks ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_iterate_stays_in_the_eps_ball(seed):
    model = make_model(seed)
    x, y = make_batch(seed)
    rng = np.random.default_rng(seed)
    eps, alpha = float(rng.uniform(0.01, 0.2)), float(rng.uniform(0.005, 0.1))
    g = torch.Generator().manual_seed(seed)
    runs = {
        "ifgsm": attacks.linf_iterates(model, x, y, LOSS, eps, alpha, 4),
        "tifgsm": attacks.linf_iterates(
            model, x, attacks.constant_target(x), LOSS, eps, alpha, 4, targeted=True
        ),
        "pgd": attacks.linf_iterates(model, x, y, LOSS, eps, alpha, 4, generator=g),
        "segpgd": attacks.segpgd_iterates(model, x, y, eps, alpha, 4, generator=g),
    }
    for name, run in runs.items():
        iterates = list(run)
        assert [it.step for it in iterates] == list(range(5)), name
        for it in iterates:
            assert_within_ball(it.x_adv, x, eps)
    assert_within_ball(
        attacks.pgd(model, x, y, LOSS, eps, alpha, 3, generator=g, restarts=2), x, eps
    )


def test_mask_keeps_outside_voxels_unchanged(model, batch):
    x, y = batch
    mask = brain_mask(x)
    g = torch.Generator().manual_seed(0)
    outputs = [
        attacks.fgsm(model, x, y, LOSS, 0.1, mask=mask),
        attacks.ifgsm(model, x, y, LOSS, 0.1, 0.02, 3, mask=mask),
        attacks.pgd(model, x, y, LOSS, 0.1, 0.02, 3, generator=g, mask=mask),
        attacks.segpgd(model, x, y, 0.1, 0.02, 3, generator=g, mask=mask),
    ]
    outside = ~mask.expand_as(x)
    for x_adv in outputs:
        assert torch.equal(x_adv[outside], x[outside])
        assert (x_adv[~outside] != x[~outside]).any()


def test_zero_eps_is_identity(model, batch):
    x, y = batch
    g = torch.Generator().manual_seed(0)
    assert torch.equal(attacks.fgsm(model, x, y, LOSS, 0.0), x)
    assert torch.equal(attacks.ifgsm(model, x, y, LOSS, 0.0, 0.01, 3), x)
    assert torch.equal(attacks.pgd(model, x, y, LOSS, 0.0, 0.01, 2, generator=g), x)


def test_iterate_k_equals_a_fresh_run_with_k_steps(model, batch):
    x, y = batch
    iterates = list(attacks.linf_iterates(model, x, y, LOSS, 0.05, 0.01, 4))
    pgd_iterates = list(
        attacks.linf_iterates(
            model, x, y, LOSS, 0.05, 0.01, 4, generator=torch.Generator().manual_seed(7)
        )
    )
    model.eval()
    for k in range(5):
        fresh = attacks.ifgsm(model, x, y, LOSS, 0.05, 0.01, k)
        assert torch.equal(iterates[k].x_adv, fresh)
        with torch.no_grad():  # the reused gradient-forward logits are the eval-mode prediction
            torch.testing.assert_close(iterates[k].logits, model(fresh))
        fresh_pgd = attacks.pgd(
            model, x, y, LOSS, 0.05, 0.01, k, generator=torch.Generator().manual_seed(7)
        )
        assert torch.equal(pgd_iterates[k].x_adv, fresh_pgd)
    assert not torch.equal(iterates[4].x_adv, iterates[3].x_adv)


def test_targeted_attack_moves_the_output_towards_the_target(model, batch):
    x, _ = batch
    target = attacks.constant_target(x, 1)
    x_adv = attacks.ifgsm(model, x, target, LOSS, 0.1, 0.01, 10, targeted=True)
    model.eval()
    with torch.no_grad():
        before = attacks.per_sample_loss(LOSS, model(x), target)
        after = attacks.per_sample_loss(LOSS, model(x_adv), target)
        class_1_before = (model(x).argmax(1) == 1).float().mean()
        class_1_after = (model(x_adv).argmax(1) == 1).float().mean()
    assert (after < before).all()
    assert class_1_after > class_1_before


def test_untargeted_attack_increases_the_loss(model, batch):
    x, y = batch
    x_adv = attacks.ifgsm(model, x, y, LOSS, 0.1, 0.01, 10)
    model.eval()
    with torch.no_grad():
        before = attacks.per_sample_loss(LOSS, model(x), y)
        after = attacks.per_sample_loss(LOSS, model(x_adv), y)
    assert (after > before).all()


def test_pgd_restarts_keep_the_per_sample_worst_case(model, batch):
    x, y = batch
    args = (model, x, y, LOSS, 0.1, 0.02, 2)
    g = torch.Generator().manual_seed(3)
    singles = [attacks.pgd(*args, generator=g, restarts=1) for _ in range(4)]
    best = attacks.pgd(*args, generator=torch.Generator().manual_seed(3), restarts=4)
    model.eval()
    with torch.no_grad():
        losses = torch.stack([attacks.per_sample_loss(LOSS, model(s), y) for s in singles])
        best_loss = attacks.per_sample_loss(LOSS, model(best), y)
    torch.testing.assert_close(best_loss, losses.max(0).values)
    for i, r in enumerate(losses.argmax(0).tolist()):
        assert torch.equal(best[i], singles[r][i])
    assert not torch.equal(singles[0], singles[1])  # restarts really differ


def test_segpgd_changes_predictions(model, batch):
    x, y = batch
    x_adv = attacks.segpgd(model, x, y, 0.1, 0.02, 5, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        changed = (model(x_adv).argmax(1) != model(x).argmax(1)).float().mean()
        ce_clean = nn.functional.cross_entropy(model(x), y)
        ce_adv = nn.functional.cross_entropy(model(x_adv), y)
    assert changed > 0.05
    assert ce_adv > ce_clean


def test_segpgd_loss_weights_known_answer():
    # two voxels: the first correctly classified (class 0), the second wrongly (true class 0)
    logits = torch.tensor([[[2.0, 1.0], [0.0, 3.0]]])  # (B=1, C=2, W=2)
    target = torch.tensor([[0, 0]])
    ce = nn.functional.cross_entropy(logits, target, reduction="none")[0]
    steps = 4
    for step in range(steps):
        lam = step / (2 * steps)  # (t - 1) / (2T) with t = step + 1
        expected = ((1 - lam) * ce[0] + lam * ce[1]) / 2
        torch.testing.assert_close(attacks.segpgd_loss(logits, target, step, steps)[0], expected)


def test_temperature_exposes_gradient_masking():
    # A network distilled at T and deployed at T = 1 outputs logits ×T: its softmax saturates
    # and float32 gradients vanish wherever it is confident. A local network (no normalisation
    # coupling all voxels) makes the masking plain.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 4, 1))
    temperature = 1e4

    class Distilled(nn.Module):
        def forward(self, x):
            return net(x) * temperature

    model = Distilled()
    x, y = make_batch(4)
    args = (0.1, 0.02, 5)
    masked = attacks.ifgsm(model, x, y, LOSS, *args)
    exposed = attacks.ifgsm(model, x, y, attacks.with_temperature(LOSS, temperature), *args)
    with torch.no_grad():
        clean = net(x).argmax(1)
        changed_masked = (net(masked).argmax(1) != clean).float().mean()
        changed_exposed = (net(exposed).argmax(1) != clean).float().mean()
    assert (masked == x).float().mean() > 0.2  # zero gradient: sign 0, voxel untouched
    assert (exposed != x).all()
    assert changed_exposed > 3 * changed_masked


def test_attacks_are_shape_agnostic_2d():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    y = torch.randint(0, 4, (2, 16, 16), generator=g)
    sweep = list(attacks.fgsm_sweep(model, x, y, LOSS, [0.0, 0.05]))
    assert sweep[1].logits.shape == (2, 4, 16, 16)
    for x_adv in (
        sweep[1].x_adv,
        attacks.ifgsm(model, x, y, LOSS, 0.05, 0.01, 3),
        attacks.segpgd(model, x, y, 0.05, 0.01, 3, generator=g),
    ):
        assert x_adv.shape == x.shape and not torch.equal(x_adv, x)
        assert_within_ball(x_adv, x, 0.05)


def test_attack_under_bf16_autocast(model, batch):
    x, y = batch
    with autocast(torch.device("cpu"), True):
        iterates = list(attacks.linf_iterates(model, x, y, LOSS, 0.05, 0.01, 2))
    assert iterates[-1].x_adv.dtype == torch.float32
    assert_within_ball(iterates[-1].x_adv, x, 0.05)
    assert not torch.equal(iterates[-1].x_adv, x)


# --- the random-sign control ------------------------------------------------------------------


def test_random_sign_is_plus_minus_eps_inside_the_mask_and_seeded(batch):
    x, _ = batch
    mask = brain_mask(x)
    sweep = list(attacks.random_sign_sweep(
        x, [0.0, 0.05, 0.1], generator=torch.Generator().manual_seed(3), mask=mask
    ))  # fmt: skip
    assert [(it.eps, it.step, it.logits) for it in sweep] == [(0.0, 0, None), (0.05, 0, None),
                                                               (0.1, 0, None)]  # fmt: skip
    assert torch.equal(sweep[0].x_adv, x)
    delta = (sweep[2].x_adv - x) / (0.1 * attacks.relative_scale(x))
    inside = mask.expand_as(x)
    torch.testing.assert_close(delta[inside].abs(), torch.ones(int(inside.sum())))
    assert (delta[~inside] == 0).all()
    assert 0.4 < (delta[inside] > 0).float().mean() < 0.6  # signs drawn fairly
    torch.testing.assert_close(sweep[1].x_adv - x, (sweep[2].x_adv - x) / 2)  # one draw, all ε
    again = attacks.random_sign_sweep(
        x, [0.1], generator=torch.Generator().manual_seed(3), mask=mask
    )
    assert torch.equal(next(again).x_adv, sweep[2].x_adv)
    other = attacks.random_sign_sweep(
        x, [0.1], generator=torch.Generator().manual_seed(4), mask=mask
    )
    assert not torch.equal(next(other).x_adv, sweep[2].x_adv)


# --- parameter validation ---------------------------------------------------------------------


def _bad_calls(model, x, y):
    g = torch.Generator().manual_seed(0)
    soft_y = nn.functional.one_hot(y, 4).movedim(-1, 1).float()
    return {
        "eps<0": lambda: attacks.fgsm(model, x, y, LOSS, -0.1),
        "eps=inf": lambda: attacks.fgsm(model, x, y, LOSS, float("inf")),
        "alpha": lambda: attacks.ifgsm(model, x, y, LOSS, 0.05, 0.0, 3),
        "steps": lambda: attacks.ifgsm(model, x, y, LOSS, 0.05, 0.01, -1),
        "target batch": lambda: attacks.fgsm(model, x, y[:1], LOSS, 0.05),
        "mask dtype": lambda: attacks.fgsm(model, x, y, LOSS, 0.05, mask=brain_mask(x).float()),
        "mask shape": lambda: attacks.fgsm(model, x, y, LOSS, 0.05, mask=brain_mask(x)[:, :, 0]),
        "x dtype": lambda: attacks.fgsm(model, x.long(), y, LOSS, 0.05),
        "epsilons": lambda: attacks.fgsm_sweep(model, x, y, LOSS, []),
        "eval_batch": lambda: attacks.fgsm_sweep(model, x, y, LOSS, [0.1], eval_batch=0),
        "restarts": lambda: attacks.pgd(model, x, y, LOSS, 0.05, 0.01, 2, generator=g, restarts=0),
        "generator": lambda: attacks.pgd(model, x, y, LOSS, 0.05, 0.01, 2, generator=None),
        "generators": lambda: attacks.pgd(model, x, y, LOSS, 0.05, 0.01, 2, generator=[g]),
        "segpgd steps": lambda: attacks.segpgd_iterates(model, x, y, 0.05, 0.01, 0, generator=g),
        "segpgd target": lambda: attacks.segpgd(model, x, soft_y, 0.05, 0.01, 1, generator=g),
        "temperature": lambda: attacks.with_temperature(LOSS, 0.0),
        "noise eps": lambda: attacks.random_sign_sweep(x, [-0.1], generator=g),
        "noise epsilons": lambda: attacks.random_sign_sweep(x, [], generator=g),
        "noise generator": lambda: attacks.random_sign_sweep(x, [0.1], generator=None),
        "noise mask": lambda: attacks.random_sign_sweep(
            x, [0.1], generator=g, mask=brain_mask(x).float()
        ),
        "class": lambda: attacks.constant_target(x, -1),
        "loss shape": lambda: attacks.fgsm(
            model, x, y, lambda logits, t: logits.flatten(1).mean(1).repeat(2), 0.05
        ),
    }


@pytest.mark.parametrize("case", list(_bad_calls(None, *make_batch(0)).keys()))
def test_bad_arguments_raise(model, batch, case):
    with pytest.raises(ValueError):
        _bad_calls(model, *batch)[case]()
