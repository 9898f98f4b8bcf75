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
    # targeted: a step down the loss towards the target
    target = torch.ones_like(y)
    x_ref = x.clone().requires_grad_(True)
    logits = reference(x_ref)
    sum(LOSS(logits[i : i + 1], target[i : i + 1]) for i in range(2)).backward()
    torch.testing.assert_close(
        attacks.fgsm(model, x, target, LOSS, eps, targeted=True),
        x - eps_abs * x_ref.grad.sign(), rtol=0, atol=0,
    )  # fmt: skip


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
    assert [it.step for it in sweep] == [1] * len(epsilons)  # one gradient step
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
    epsilons = [0.02, 0.0, 0.01, 0.05, 1.0]
    mask = brain_mask(x)  # zero direction outside: the batched inputs must match there too
    single = list(attacks.fgsm_sweep(model, x, y, LOSS, epsilons, mask=mask))
    batched = list(
        attacks.fgsm_sweep(model, x, y, LOSS, epsilons, mask=mask, eval_batch=eval_batch)
    )
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


def reference_iterates(model, x, target, loss, eps, alpha, steps, start, descend=False):
    """Hand-written L∞ loop: X_{k+1} = Π(X_k ± α_abs·sign ∇ Σ_i loss_k(X_k)_i), ε_abs = ε·max|x|
    per sample and channel; ``loss(logits, target, k)`` is the batch's summed objective."""
    model = copy.deepcopy(model).eval()
    scale = x.abs().amax(dim=tuple(range(2, x.ndim)), keepdim=True)
    iterates = [start]
    for k in range(steps):
        x_k = iterates[-1].clone().requires_grad_(True)
        loss(model(x_k), target, k).backward()
        step = alpha * scale * x_k.grad.sign()
        delta = x_k.detach() + (-step if descend else step) - x
        iterates.append(x + torch.clamp(delta, -eps * scale, eps * scale))
    return iterates


def summed(loss_fn):
    return lambda logits, target, k: sum(
        loss_fn(logits[i : i + 1], target[i : i + 1]) for i in range(logits.shape[0])
    )


def segpgd_reference_loss(steps):
    """Gu et al. (2022): CE weighted 1 − λ on correct and λ on wrong voxels, λ = k / (2T),
    averaged over voxels, summed over samples."""

    def loss(logits, target, k):
        ce = nn.functional.cross_entropy(logits, target, reduction="none")
        lam = k / (2 * steps)
        weight = torch.where(logits.argmax(1) == target, 1 - lam, lam)
        return (weight * ce).flatten(1).mean(1).sum()

    return loss


def assert_iterates_match(iterates, reference):
    assert [it.step for it in iterates] == list(range(len(reference)))
    assert all(it.eps == EPS for it in iterates)
    for it, ref in zip(iterates, reference, strict=True):
        torch.testing.assert_close(it.x_adv, ref, rtol=0, atol=1e-5, msg=f"iterate {it.step}")


def assert_budget_spent(x_adv, x, eps):
    """With α·N >= ε the sign steps reach the edge of the ball: max |δ| = ε·scale per sample and
    channel (not ε/2, not α·N/4)."""
    scale = x.abs().amax(dim=(2, 3, 4), keepdim=True)
    reached = (x_adv - x).abs().amax(dim=(2, 3, 4), keepdim=True) / scale
    torch.testing.assert_close(reached, torch.full_like(reached, eps), rtol=1e-5, atol=0)


# paper-like budget: α·N = ε; a voxel whose gradient sign never changes reaches ε at step N
EPS, ALPHA, STEPS = 0.05, 0.0125, 4


def test_ifgsm_iterates_equal_a_hand_written_loop(model, batch):
    x, y = batch
    iterates = list(attacks.linf_iterates(model, x, y, LOSS, EPS, ALPHA, STEPS))
    reference = reference_iterates(model, x, y, summed(LOSS), EPS, ALPHA, STEPS, x)
    assert_iterates_match(iterates, reference)
    assert_budget_spent(iterates[-1].x_adv, x, EPS)
    assert torch.equal(attacks.ifgsm(model, x, y, LOSS, EPS, ALPHA, STEPS), iterates[-1].x_adv)


def test_tifgsm_iterates_descend_like_a_hand_written_loop(model, batch):
    x, _ = batch
    target = torch.ones(x.shape[0], *x.shape[2:], dtype=torch.long)
    iterates = list(attacks.linf_iterates(model, x, target, LOSS, EPS, ALPHA, STEPS, targeted=True))
    reference = reference_iterates(
        model, x, target, summed(LOSS), EPS, ALPHA, STEPS, x, descend=True
    )
    assert_iterates_match(iterates, reference)
    assert_budget_spent(iterates[-1].x_adv, x, EPS)


def test_pgd_from_its_start_equals_a_hand_written_loop(model, batch):
    x, y = batch
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    iterates = list(
        attacks.linf_iterates(model, x, y, LOSS, EPS, ALPHA, STEPS, generator=generators)
    )
    start = iterates[0].x_adv  # the random start; the loop from it is checked by hand
    scale = x.abs().amax(dim=(2, 3, 4), keepdim=True)
    u = (start - x) / (EPS * scale)  # uniform on (-1, 1) in every voxel
    assert u.abs().max() <= 1 and abs(float(u.mean())) < 0.02
    assert float(u.abs().mean()) == pytest.approx(0.5, abs=0.02)
    reference = reference_iterates(model, x, y, summed(LOSS), EPS, ALPHA, STEPS, start)
    assert_iterates_match(iterates, reference)
    assert_budget_spent(iterates[-1].x_adv, x, EPS)
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    final = attacks.pgd(model, x, y, LOSS, EPS, ALPHA, STEPS, generator=generators)
    assert torch.equal(final, iterates[-1].x_adv)


def test_segpgd_iterates_equal_a_hand_written_loop(model, batch):
    x, y = batch
    iterates = list(attacks.segpgd_iterates(model, x, y, EPS, ALPHA, STEPS, generator=None))
    reference = reference_iterates(model, x, y, segpgd_reference_loss(STEPS), EPS, ALPHA, STEPS, x)
    assert_iterates_match(iterates, reference)
    assert_budget_spent(iterates[-1].x_adv, x, EPS)
    assert torch.equal(
        attacks.segpgd(model, x, y, EPS, ALPHA, STEPS, generator=None), iterates[-1].x_adv
    )
    g = [torch.Generator().manual_seed(s) for s in (8, 9)]
    random_start = attacks.segpgd(model, x, y, EPS, ALPHA, STEPS, generator=g)
    assert not torch.equal(random_start, iterates[-1].x_adv)
    # from a random start: the same loop from the start drawn
    g = [torch.Generator().manual_seed(s) for s in (8, 9)]
    iterates = list(attacks.segpgd_iterates(model, x, y, EPS, ALPHA, STEPS, generator=g))
    reference = reference_iterates(
        model, x, y, segpgd_reference_loss(STEPS), EPS, ALPHA, STEPS, iterates[0].x_adv
    )
    assert_iterates_match(iterates, reference)
    assert torch.equal(random_start, iterates[-1].x_adv)


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


def test_targeted_pgd_steps_down_and_keeps_the_lowest_loss(model, batch):
    x, _ = batch
    target = attacks.constant_target(x)
    args = (model, x, target, LOSS, 0.1, 0.02, 2)
    g = torch.Generator().manual_seed(3)
    singles = [attacks.pgd(*args, generator=g, targeted=True) for _ in range(3)]
    *_, last = attacks.linf_iterates(*args, targeted=True,
                                     generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert torch.equal(singles[0], last.x_adv)
    best = attacks.pgd(*args, generator=torch.Generator().manual_seed(3), restarts=3,
                       targeted=True)  # fmt: skip
    model.eval()
    with torch.no_grad():
        losses = torch.stack([attacks.per_sample_loss(LOSS, model(s), target) for s in singles])
        best_loss = attacks.per_sample_loss(LOSS, model(best), target)
        start_loss = attacks.per_sample_loss(LOSS, model(x), target)
    torch.testing.assert_close(best_loss, losses.min(0).values)
    assert (best_loss < start_loss).all()


def test_last_iterate_is_evaluated_only_when_asked(model, batch):
    x, y = batch
    model.eval()
    for run in (attacks.linf_iterates, lambda *a, **k: attacks.segpgd_iterates(
            *a[:3], *a[4:], generator=None, **k)):  # fmt: skip
        *_, last = run(model, x, y, LOSS, 0.05, 0.02, 2)
        with torch.no_grad():
            torch.testing.assert_close(last.logits, model(last.x_adv))
        *_, skipped = run(model, x, y, LOSS, 0.05, 0.02, 2, evaluate_last=False)
        assert skipped.logits is None and torch.equal(skipped.x_adv, last.x_adv)


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
    """case -> (call, the error message it must give)."""
    g = torch.Generator().manual_seed(0)
    soft_y = nn.functional.one_hot(y, 4).movedim(-1, 1).float()
    mask = brain_mask(x)
    return {
        "eps<0": (lambda: attacks.fgsm(model, x, y, LOSS, -0.1),
                  "eps must be finite and >= 0, got -0.1"),
        "eps=inf": (lambda: attacks.fgsm(model, x, y, LOSS, float("inf")),
                    "eps must be finite and >= 0, got inf"),
        "alpha": (lambda: attacks.ifgsm(model, x, y, LOSS, 0.05, 0.0, 3),
                  "alpha must be finite and > 0, got 0.0"),
        "steps": (lambda: attacks.ifgsm(model, x, y, LOSS, 0.05, 0.01, -1),
                  "steps must be an integer >= 0, got -1"),
        "target batch": (lambda: attacks.fgsm(model, x, y[:1], LOSS, 0.05),
                         "target batch size 1 differs from x's 2"),
        "mask dtype": (lambda: attacks.fgsm(model, x, y, LOSS, 0.05, mask=mask.float()),
                       r"mask must be bool with shape \(2, 1, 16, 16, 16\), got torch.float32"),
        "mask shape": (lambda: attacks.fgsm(model, x, y, LOSS, 0.05, mask=mask[:, :, 0]),
                       r"mask must be bool .* got torch.bool \(2, 1, 16, 16\)"),
        "x dtype": (lambda: attacks.fgsm(model, x.long(), y, LOSS, 0.05),
                    r"x must be a float tensor \(B, C, \*spatial\), got torch.int64"),
        "epsilons": (lambda: attacks.fgsm_sweep(model, x, y, LOSS, []),
                     "epsilons must not be empty"),
        "eval_batch": (lambda: attacks.fgsm_sweep(model, x, y, LOSS, [0.1], eval_batch=0),
                       "eval_batch must be an integer >= 1, got 0"),
        "restarts": (lambda: attacks.pgd(model, x, y, LOSS, 0.05, 0.01, 2, generator=g,
                                         restarts=0), "restarts must be an integer >= 1, got 0"),
        "generator": (lambda: attacks.pgd(model, x, y, LOSS, 0.05, 0.01, 2, generator=None),
                      r"need a torch.Generator or one per sample \(2\), got None"),
        "generators": (lambda: attacks.pgd(model, x, y, LOSS, 0.05, 0.01, 2, generator=[g]),
                       r"need a torch.Generator or one per sample \(2\)"),
        "segpgd steps": (lambda: attacks.segpgd_iterates(model, x, y, 0.05, 0.01, 0, generator=g),
                         "SegPGD needs steps >= 1, got 0"),
        "segpgd target": (lambda: attacks.segpgd(model, x, soft_y, 0.05, 0.01, 1, generator=g),
                          "SegPGD needs an integer class-map target"),
        "temperature": (lambda: attacks.with_temperature(LOSS, 0.0),
                        "temperature must be finite and > 0, got 0.0"),
        "temperature inf": (lambda: attacks.with_temperature(LOSS, float("inf")),
                            "temperature must be finite and > 0, got inf"),
        "noise eps": (lambda: attacks.random_sign_sweep(x, [-0.1], generator=g),
                      "eps must be finite and >= 0, got -0.1"),
        "noise epsilons": (lambda: attacks.random_sign_sweep(x, [], generator=g),
                           "epsilons must not be empty"),
        "noise generator": (lambda: attacks.random_sign_sweep(x, [0.1], generator=None),
                            "need a torch.Generator or one per sample"),
        "noise mask": (lambda: attacks.random_sign_sweep(x, [0.1], generator=g,
                                                         mask=mask.float()), "mask must be bool"),
        "noise x": (lambda: attacks.random_sign_sweep(x.long(), [0.1], generator=g),
                    r"x must be a float tensor \(B, C, \*spatial\), got torch.int64"),
        "class": (lambda: attacks.constant_target(x, -1), "class_index must be >= 0, got -1"),
        "alpha=inf": (lambda: attacks.ifgsm(model, x, y, LOSS, 0.05, float("inf"), 3),
                      "alpha must be finite and > 0, got inf"),
        "iterates mask": (lambda: attacks.linf_iterates(model, x, y, LOSS, 0.05, 0.01, 2,
                                                        mask=mask[:, 0]), "mask must be bool"),
        "segpgd mask": (lambda: attacks.segpgd_iterates(model, x, y, 0.05, 0.01, 2, generator=g,
                                                        mask=mask[:, 0]), "mask must be bool"),
        "segpgd alpha": (lambda: attacks.segpgd(model, x, y, 0.05, 0.0, 2, generator=g),
                         "alpha must be finite and > 0, got 0.0"),
        "segpgd steps 1.5": (lambda: attacks.segpgd(model, x, y, 0.05, 0.01, 1.5, generator=g),
                             "steps must be an integer >= 0, got 1.5"),
        "segpgd float map": (lambda: attacks.segpgd(model, x, y.float(), 0.05, 0.01, 1,
                                                    generator=g), "SegPGD needs an integer"),
        "segpgd map shape": (lambda: attacks.segpgd(model, x, y[:, :-1], 0.05, 0.01, 1,
                                                    generator=g), "SegPGD needs an integer"),
        "loss shape": (lambda: attacks.fgsm(
            model, x, y, lambda logits, t: logits.flatten(1).mean(1).repeat(2), 0.05
        ), r"loss_fn must return a single value, got shape \(2,\)"),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(_bad_calls(None, *make_batch(0)).keys()))
def test_bad_arguments_raise(model, batch, case):
    call, message = _bad_calls(model, *batch)[case]
    with pytest.raises(ValueError, match="^" + message):  # the message itself, not inside another
        call()


def test_edge_arguments_that_are_valid():
    """Class 0 as a target, a temperature below 1, one spatial axis for the noise control."""
    x, _ = make_batch(0)
    assert (attacks.constant_target(x) == 1).all()  # ti-FGSM's default target: class 1
    target = attacks.constant_target(x, 0)
    assert target.dtype == torch.long and target.shape == (2, SIZE, SIZE, SIZE)
    assert (target == 0).all()
    logits, y = torch.randn(1, 4, 5, 5, 5), torch.randint(0, 4, (1, 5, 5, 5))
    torch.testing.assert_close(attacks.with_temperature(LOSS, 0.5)(logits, y), LOSS(2 * logits, y))
    signal = torch.randn(2, 4, 32)  # (B, C, W)
    (it,) = attacks.random_sign_sweep(signal, [0.1], generator=torch.Generator().manual_seed(0))
    scale = signal.abs().amax(2, keepdim=True)
    torch.testing.assert_close((it.x_adv - signal).abs(), 0.1 * scale.expand_as(signal))
