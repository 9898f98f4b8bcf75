"""Training strategies: one optimiser update per call on a batch (the defences' steps).

Strategies (the supplement's defences; :func:`segrobust.training.make_step` maps a name to its
step function):

- ``baseline``: one optimiser step on the clean batch.
- ``distill_teacher``: the same step with the loss on softmax(z / T).
- ``distill_student``: the same step at temperature T against the teacher's soft labels
  softmax(z_teacher / T). The teacher's logits are computed once per process start on the
  un-augmented training volumes (teacher in eval mode, no grad, same autocast) and kept in
  memory; each batch's logits are augmented exactly like its image and label. Cached rather
  than recomputed per step: a teacher forward costs 25-36% of a student step here; the cache
  costs one forward per subject per (re)start and float32 memory, 4 classes x voxels x 4 bytes
  (34 MB per subject at 128³).
  The saved student is an ordinary network, evaluated and attacked at T = 1 (Papernot et al.).
- ``adversarial``: FGSM adversarial training, L̃ = α·L(x) + (1 − α)·L(x + ε_abs·sign ∇ₓL(x)).
- ``pgd_adversarial`` (beyond the paper; Madry et al. 2018): the same loss with x' the k-step
  L∞ PGD example from a uniform random start in the ε ball, step α (relative like ε), projected
  (:func:`segrobust.attacks.linf_iterates`). The random start is drawn from the epoch's
  perturbation stream, so a resumed run reproduces it; without random start and k = 1, α = ε,
  x' is the FGSM example.
- ``noise``: the same two-pass scheme with x' = x + U(−r_abs, r_abs) (radius r = 0.01).

ε and r are relative to the image: ε_abs = ε · max|x| per sample and channel
(:func:`segrobust.attacks.relative_scale`), no clamp, whole volume (no brain mask).

Two-pass updates (``update`` setting), adversarial, PGD and noise alike:

- ``accumulate`` (default): gradients of α·L(x) and (1 − α)·L(x') are accumulated and Adam
  takes one step, i.e. the exact gradient of L̃ (x' held fixed). The supplement splits L̃ into
  two passes "due to memory limitations", which only changes memory, not the update. Only
  here does α weigh the two losses as written: separate Adam steps largely undo a loss's scale.
- ``sequential``: the literal order "train with the perturbed batch, then with the clean one":
  one Adam step on (1 − α)·L(x'), then one on α·L(x).

Adversarial examples (``example_mode`` setting) are crafted at the current weights with the
network in ``eval`` mode (default: dropout off, the network that is deployed and attacked) or
in ``train`` mode (dropout on, a fresh dropout mask per gradient). FGSM with ``accumulate`` in
train mode reuses the clean pass's ∇ₓL(x), so a batch costs exactly the "forward and backward
propagation twice" the supplement's Discussion counts; every other FGSM combination costs a
third pass, PGD k more. Neither mode is an error: with eval mode the example targets the
network that is evaluated, with train mode a random thinned network (weaker against the
deployed one); benchmarks/fgsm_training_ablation.py measures the difference.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from segrobust.attacks import fgsm, linf_iterates, relative_scale, sign_direction, uniform_start

UPDATES: tuple[str, ...] = ("accumulate", "sequential")
EXAMPLE_MODES: tuple[str, ...] = ("eval", "train")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class StepContext:
    """What a step needs besides model and batch."""

    optimizer: torch.optim.Optimizer
    loss: LossFn  # (logits, target) -> scalar; variant, gamma and temperature bound
    amp: Callable[[], AbstractContextManager]
    generator: torch.Generator  # CPU; random perturbations


@dataclass(frozen=True)
class StepResult:
    """The objective value minimised by the step and the perturbed input it used, if any."""

    loss: float
    perturbed: Tensor | None = None


Step = Callable[[nn.Module, Tensor, Tensor, StepContext], StepResult]


def _forward_backward(
    model: nn.Module, x: Tensor, target: Tensor, ctx: StepContext, weight: float
) -> float:
    """Loss at x; gradients of weight·loss accumulate (no backward at weight 0)."""
    with ctx.amp():
        loss = ctx.loss(model(x), target)
    if weight:
        (weight * loss).backward()
    return float(loss.detach())


def clean_step(model: nn.Module, image: Tensor, target: Tensor, ctx: StepContext) -> StepResult:
    """One step on the clean batch (baseline and both distillation strategies)."""
    ctx.optimizer.zero_grad(set_to_none=True)
    loss = _forward_backward(model, image, target, ctx, 1.0)
    ctx.optimizer.step()
    return StepResult(loss)


def _accumulated_update(
    model: nn.Module,
    image: Tensor,
    target: Tensor,
    ctx: StepContext,
    alpha: float,
    perturb: Callable[[Tensor | None], Tensor],
    input_grad: bool,
) -> StepResult:
    """One update on α·L(x) + (1 − α)·L(x'), x' = perturb(∇ₓL(x) if input_grad else None)."""
    ctx.optimizer.zero_grad(set_to_none=True)
    x = image.detach().requires_grad_(input_grad)
    clean = _forward_backward(model, x, target, ctx, 1.0)
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(alpha)  # after the backward: ∇ₓ must not vanish at α = 0
    perturbed = perturb(x.grad).detach()
    other = _forward_backward(model, perturbed, target, ctx, 1 - alpha)
    ctx.optimizer.step()
    return StepResult(alpha * clean + (1 - alpha) * other, perturbed)


def _sequential_updates(
    model: nn.Module,
    image: Tensor,
    perturbed: Tensor,
    target: Tensor,
    ctx: StepContext,
    alpha: float,
) -> StepResult:
    """A step on (1 − α)·L(x'), then a step on α·L(x); a zero weight skips its step."""
    losses = []
    for x, weight in ((perturbed, 1 - alpha), (image, alpha)):
        ctx.optimizer.zero_grad(set_to_none=True)
        losses.append(_forward_backward(model, x, target, ctx, weight))
        if weight:
            ctx.optimizer.step()
    return StepResult((1 - alpha) * losses[0] + alpha * losses[1], perturbed)


class _TrainModeView(nn.Module):
    """``model`` seen by an attack with dropout left on: the attacks switch their model to
    eval mode for the gradient (and restore it afterwards); this view ignores both calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> "_TrainModeView":
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _attacked(model: nn.Module, example_mode: str) -> nn.Module:
    _check_choice("example_mode", example_mode, EXAMPLE_MODES)
    return model if example_mode == "eval" else _TrainModeView(model.train())


def _two_pass(
    model: nn.Module,
    image: Tensor,
    x_adv: Tensor,
    target: Tensor,
    ctx: StepContext,
    alpha: float,
    update: str,
) -> StepResult:
    if update == "sequential":
        return _sequential_updates(model, image, x_adv, target, ctx, alpha)
    return _accumulated_update(model, image, target, ctx, alpha, lambda _: x_adv, input_grad=False)


def adversarial_step(
    model: nn.Module,
    image: Tensor,
    target: Tensor,
    ctx: StepContext,
    *,
    epsilon: float,
    alpha: float,
    update: str = "accumulate",
    example_mode: str = "eval",
) -> StepResult:
    """FGSM adversarial training step; ``perturbed`` = x + ε·max|x|·sign ∇ₓL(x), the gradient
    taken in ``example_mode`` at the current weights."""
    _check_choice("update", update, UPDATES)
    if update == "accumulate" and example_mode == "train":  # ∇ₓ from the clean pass
        budget = epsilon * relative_scale(image)
        return _accumulated_update(
            model, image, target, ctx, alpha,
            lambda grad: image + budget * sign_direction(grad, None, descend=False),
            input_grad=True,
        )  # fmt: skip
    with ctx.amp():
        x_adv = fgsm(_attacked(model, example_mode), image, target, ctx.loss, epsilon)
    return _two_pass(model, image, x_adv, target, ctx, alpha, update)


def pgd_adversarial_step(
    model: nn.Module,
    image: Tensor,
    target: Tensor,
    ctx: StepContext,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    alpha: float,
    random_start: bool = True,
    update: str = "accumulate",
    example_mode: str = "eval",
) -> StepResult:
    """PGD adversarial training step (Madry et al. 2018); ``perturbed`` = the k-step L∞ PGD
    example (ε, α = ``step_size`` relative to max|x|) from a uniform start drawn from
    ``ctx.generator`` (from x itself without ``random_start``), crafted in ``example_mode``."""
    _check_choice("update", update, UPDATES)
    generator = ctx.generator if random_start else None
    with ctx.amp():
        *_, last = linf_iterates(
            _attacked(model, example_mode), image, target, ctx.loss, epsilon, step_size, steps,
            generator=generator, evaluate_last=False,
        )  # fmt: skip
    return _two_pass(model, image, last.x_adv, target, ctx, alpha, update)


def noise_step(
    model: nn.Module,
    image: Tensor,
    target: Tensor,
    ctx: StepContext,
    *,
    radius: float,
    alpha: float,
    update: str = "accumulate",
) -> StepResult:
    """Uniform-noise augmentation step; ``perturbed`` = x + U(−r, r)·max|x| (ctx.generator)."""
    _check_choice("update", update, UPDATES)
    noisy = uniform_start(image, radius * relative_scale(image), ctx.generator, None)
    return _two_pass(model, image, noisy, target, ctx, alpha, update)
