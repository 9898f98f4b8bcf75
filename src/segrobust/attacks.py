"""First-order L∞ attacks on segmentation networks: FGSM, i-FGSM, ti-FGSM, PGD, SegPGD.

Each attack is a loop over few-line step functions (CosPGD style), works on any ``nn.Module``
returning logits (B, C, *spatial), 2D or 3D, and returns the adversarial input; evaluation is
separate, so a transfer attack is ``fgsm(source_model, ...)`` evaluated on another model.

Conventions (shared with :mod:`segrobust.metrics`):

- **Relative budget.** ε and α are fractions of the image intensity ("5% of the maximum pixel
  magnitude"): per sample and per channel (modality), ``scale = max over voxels of |x|``
  (shape (B, C, 1, ..., 1)), ε_abs = ε·scale, α_abs = α·scale. The image-quality metrics use
  the same scale (RMSE / scale, PSNR with data_range = scale), which reproduces Table 1 of the
  paper (FGSM ε = 0.05 → RMSE ≈ 0.04, PSNR ≈ 28 dB).
- **No clamp** to [0, 1]: inputs are z-scored MR (clamping them is a known torchattacks/ROG bug).
- **Mask.** An optional brain ``mask`` (B, 1, *spatial) bool zeroes the perturbation outside it.
- **Per-sample objective.** The gradient is taken of the sum over samples of ``loss_fn`` applied
  to each sample alone, so a volume's perturbation never depends on the rest of its batch (a
  loss pooled over the batch would couple them) and restarts are chosen per sample. Random
  starts take one generator per sample, so they do not depend on the batch either; a batch of
  volumes differs from one volume at a time only by float rounding (eval mode, instance norm).
- **No side effects on the model.** Attacks run with the model in eval mode (dropout off) and
  its parameters frozen (``requires_grad`` off, so no backward pass computes a weight gradient
  nobody asked for: 1.6× cheaper input gradients), both restored afterwards, and differentiate
  w.r.t. the input only (``torch.autograd.grad``). Forwards used only for
  evaluation run under ``torch.no_grad()`` (:func:`forward_only`). For bf16, wrap the call in
  ``segrobust.models.device.autocast(device, True)``; losses should compute in float32.
- **Reuse.** :func:`fgsm_sweep` takes one gradient for all ε; the iterative attacks are
  generators yielding every iterate with the logits of the forward that the next gradient needed
  anyway, so a Dice-vs-iterations curve costs one run (plus one forward for the last iterate).

Paper settings: FGSM ε = 0.05; i-FGSM α = 0.005, N = 10, ε = 0.05 (α·N = ε); ti-FGSM the same,
stepping down the loss towards :func:`constant_target` (every voxel class 1). Beyond the paper:
PGD (uniform random start, restarts), SegPGD (Gu et al. 2022) and :func:`with_temperature` to
attack a distilled network through softened logits (Carlini & Wagner 2016); the control
:func:`random_sign_sweep` (random ±ε sign noise, no gradient) that every attack must beat.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]
# objective(logits, target, step) -> per-sample loss (B,); step counts gradient steps taken so far
Objective = Callable[[Tensor, Tensor, int], Tensor]


@dataclass(frozen=True)
class Iterate:
    """One adversarial input: the budget ε, gradient steps taken, the input and its logits.

    ``step`` is 1 for FGSM and k for iterate k of an iterative attack (0: the clean input or
    the random start). ``logits`` (detached, eval mode) are the model's output at ``x_adv``, or
    None when not evaluated.
    """

    eps: float
    step: int
    x_adv: Tensor
    logits: Tensor | None


# ---------------------------------------------------------------------------------------------
# validation


def _check_inputs(x: Tensor, target: Tensor, mask: Tensor | None) -> None:
    if x.ndim < 3 or not x.is_floating_point():
        raise ValueError(
            f"x must be a float tensor (B, C, *spatial), got {x.dtype} {tuple(x.shape)}"
        )
    if target.shape[:1] != x.shape[:1]:
        raise ValueError(f"target batch size {target.shape[0]} differs from x's {x.shape[0]}")
    if mask is not None and (
        mask.dtype != torch.bool or mask.shape != (x.shape[0], 1, *x.shape[2:])
    ):
        raise ValueError(
            f"mask must be bool with shape {(x.shape[0], 1, *x.shape[2:])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


def _check_budget(eps: float, alpha: float | None = None, steps: int | None = None) -> None:
    if not 0 <= eps < float("inf"):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    if alpha is not None and not 0 < alpha < float("inf"):
        raise ValueError(f"alpha must be finite and > 0, got {alpha}")
    if steps is not None and (int(steps) != steps or steps < 0):
        raise ValueError(f"steps must be an integer >= 0, got {steps}")


# ---------------------------------------------------------------------------------------------
# building blocks


def relative_scale(x: Tensor) -> Tensor:
    """Max |x| over the spatial axes per sample and channel, shape (B, C, 1, ..., 1)."""
    return x.detach().abs().amax(dim=tuple(range(2, x.ndim)), keepdim=True)


def constant_target(x: Tensor, class_index: int = 1) -> Tensor:
    """Class map (B, *spatial) with every voxel = ``class_index`` (ti-FGSM target: class 1)."""
    if class_index < 0:
        raise ValueError(f"class_index must be >= 0, got {class_index}")
    return torch.full((x.shape[0], *x.shape[2:]), class_index, dtype=torch.long, device=x.device)


def with_temperature(loss_fn: LossFn, temperature: float) -> LossFn:
    """``loss_fn`` evaluated on logits / T.

    A network distilled at temperature T and deployed at T = 1 has saturated softmax outputs,
    whose float32 gradients are exactly zero wherever it is confident, so sign attacks lose
    most of their strength (gradient masking, not robustness). Attacking through logits / T
    restores the gradient (Carlini & Wagner 2016).
    """
    if not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    return lambda logits, target: loss_fn(logits / temperature, target)


def per_sample_loss(loss_fn: LossFn, logits: Tensor, target: Tensor) -> Tensor:
    """(B,) float32: ``loss_fn`` on each sample alone (it must return one value per call)."""
    losses = []
    for i in range(logits.shape[0]):
        loss = loss_fn(logits[i : i + 1], target[i : i + 1])
        if loss.numel() != 1:
            raise ValueError(f"loss_fn must return a single value, got shape {tuple(loss.shape)}")
        losses.append(loss.reshape(()).float())
    return torch.stack(losses)


def segpgd_loss(logits: Tensor, target: Tensor, step: int, steps: int) -> Tensor:
    """SegPGD objective (Gu et al. 2022), per sample (B,).

    Voxel-wise cross-entropy, weighted (1 − λ) on correctly and λ on wrongly classified voxels,
    averaged over voxels, with λ = (t − 1) / (2T) at iteration t = step + 1 of T = ``steps``:
    early steps push correct voxels over the boundary, later ones keep wrong voxels wrong.
    """
    if target.is_floating_point() or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError("SegPGD needs an integer class-map target (B, *spatial)")
    lam = step / (2 * steps)
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    correct = logits.argmax(1) == target
    weighted = torch.where(correct, (1 - lam) * ce, lam * ce)
    return weighted.flatten(1).mean(1)


def _loss_objective(loss_fn: LossFn) -> Objective:
    return lambda logits, target, step: per_sample_loss(loss_fn, logits, target)


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode with frozen parameters; the previous mode and ``requires_grad`` restored."""
    was_training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for p in trainable:
            p.requires_grad_(True)


def input_gradient(
    model: nn.Module, x: Tensor, target: Tensor, objective: Objective, step: int = 0
) -> tuple[Tensor, Tensor]:
    """Gradient of Σ_samples objective w.r.t. the input only, and the (detached) logits at x."""
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(objective(logits, target, step).sum(), x)
    return grad, logits.detach()


def sign_direction(grad: Tensor, mask: Tensor | None, descend: bool) -> Tensor:
    """sign(∇) (negated to descend, for targeted attacks), zero outside ``mask``."""
    direction = -grad.sign() if descend else grad.sign()
    return direction if mask is None else direction * mask


def project_linf(x_adv: Tensor, x: Tensor, eps_abs: Tensor) -> Tensor:
    """Project ``x_adv`` onto the L∞ ball of radius ``eps_abs`` around ``x`` (no clamp)."""
    return x + (x_adv - x).clamp(-eps_abs, eps_abs)


Generators = torch.Generator | Sequence[torch.Generator]


def _check_generators(generator: Generators, batch: int) -> None:
    if isinstance(generator, torch.Generator):
        return
    per_sample = isinstance(generator, Sequence) and len(generator) == batch
    if not per_sample or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(f"need a torch.Generator or one per sample ({batch}), got {generator!r}")


def _uniform(x: Tensor, generator: Generators) -> Tensor:
    """U(0, 1) shaped like ``x``, on the generators' device: one draw for the batch, or one
    per sample from its own generator."""
    _check_generators(generator, x.shape[0])
    if isinstance(generator, torch.Generator):
        return torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return torch.stack([
        torch.rand(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in generator
    ])  # fmt: skip


def uniform_start(x: Tensor, eps_abs: Tensor, generator: Generators, mask: Tensor | None) -> Tensor:
    """x + U(−ε_abs, ε_abs), zero outside ``mask``; drawn on the generators' device.

    ``generator``: one for the batch, or one per sample (a sample's start then does not depend
    on the rest of its batch).
    """
    noise = _uniform(x, generator)
    noise = (2 * noise.to(x.device) - 1) * eps_abs
    return x + (noise if mask is None else noise * mask)


@torch.no_grad()
def forward_only(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)`` for scoring only, under ``no_grad`` rather than ``inference_mode``: a
    TorchScript model whose profiling executor has seen a differentiated forward under bf16
    autocast saves tensors for backward even in inference mode, and fails there ("Inference
    tensors cannot be saved for backward"); ``no_grad`` costs the same here."""
    return model(x)


# ---------------------------------------------------------------------------------------------
# one-step attacks


def fgsm_sweep(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: LossFn,
    epsilons: Sequence[float],
    *,
    targeted: bool = False,
    mask: Tensor | None = None,
    evaluate: bool = True,
    eval_batch: int = 1,
) -> Iterator[Iterate]:
    """FGSM x + ε_abs·sign(∇ₓ loss) for every ε in ``epsilons`` from a single gradient.

    Yields one :class:`Iterate` (step 1) per ε, in order. With ``evaluate`` its logits are
    computed under inference mode, ``eval_batch`` ε values per forward (a batch of
    eval_batch·B inputs: faster, more memory); for ε = 0 the gradient's own forward is reused.
    """
    _check_inputs(x, target, mask)
    if len(epsilons) == 0:
        raise ValueError("epsilons must not be empty")
    for eps in epsilons:
        _check_budget(eps)
    if int(eval_batch) != eval_batch or eval_batch < 1:
        raise ValueError(f"eval_batch must be an integer >= 1, got {eval_batch}")
    return _fgsm_sweep(
        model, x.detach(), target, loss_fn, list(epsilons), targeted, mask, evaluate, eval_batch
    )


def _fgsm_sweep(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: LossFn,
    epsilons: list[float],
    targeted: bool,
    mask: Tensor | None,
    evaluate: bool,
    eval_batch: int,
) -> Iterator[Iterate]:
    scale = relative_scale(x)
    with attack_mode(model):
        grad, clean_logits = input_gradient(model, x, target, _loss_objective(loss_fn))
        direction = sign_direction(grad, mask, descend=targeted)
        nonzero = [k for k, eps in enumerate(epsilons) if eps != 0]
        evaluated: dict[int, Tensor] = {}  # ε index -> logits, filled eval_batch at a time
        for k, eps in enumerate(epsilons):
            x_adv = x + (eps * scale) * direction
            logits = None
            if evaluate and eps == 0:
                logits = clean_logits
            elif evaluate:
                if k not in evaluated:
                    chunk = nonzero[nonzero.index(k) :][:eval_batch]
                    inputs = torch.cat([x + (epsilons[j] * scale) * direction for j in chunk])
                    outputs = forward_only(model, inputs).split(x.shape[0])
                    evaluated.update(zip(chunk, outputs, strict=True))
                logits = evaluated.pop(k)
            yield Iterate(float(eps), 1, x_adv, logits)


def fgsm(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: LossFn,
    eps: float,
    *,
    targeted: bool = False,
    mask: Tensor | None = None,
) -> Tensor:
    """FGSM adversarial input x + ε_abs·sign(∇ₓ loss(model(x), target))."""
    sweep = fgsm_sweep(
        model, x, target, loss_fn, [eps], targeted=targeted, mask=mask, evaluate=False
    )
    return next(sweep).x_adv


# ---------------------------------------------------------------------------------------------
# iterative attacks


def _linf_loop(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    objective: Objective,
    eps: float,
    alpha: float,
    steps: int,
    *,
    descend: bool,
    mask: Tensor | None,
    generator: Generators | None,
    evaluate_last: bool,
) -> Iterator[Iterate]:
    """X_{k+1} = Π_ε(X_k ± α_abs·sign(∇ objective(X_k))); yields X_0 .. X_steps with logits."""
    x = x.detach()
    scale = relative_scale(x)
    eps_abs, alpha_abs = eps * scale, alpha * scale
    x_adv = x if generator is None else uniform_start(x, eps_abs, generator, mask)
    with attack_mode(model):
        for k in range(steps):
            grad, logits = input_gradient(model, x_adv, target, objective, k)
            yield Iterate(float(eps), k, x_adv, logits)
            x_adv = x_adv + alpha_abs * sign_direction(grad, mask, descend)
            x_adv = project_linf(x_adv, x, eps_abs)
        logits = forward_only(model, x_adv) if evaluate_last else None
        yield Iterate(float(eps), steps, x_adv, logits)


def linf_iterates(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: LossFn,
    eps: float,
    alpha: float,
    steps: int,
    *,
    targeted: bool = False,
    mask: Tensor | None = None,
    generator: Generators | None = None,
    evaluate_last: bool = True,
) -> Iterator[Iterate]:
    """i-FGSM / ti-FGSM / PGD as a generator of the iterates X_0, ..., X_steps.

    Without ``generator`` X_0 = x (the paper's i-FGSM; with ``targeted`` and
    :func:`constant_target` its ti-FGSM, stepping down the loss); with it, X_0 is a uniform
    random start in the ε ball (PGD). Iterate k carries the logits of the forward already run
    for the gradient at X_k; the last one costs one extra forward (skipped unless
    ``evaluate_last``). Iterate k equals the final iterate of a separate run with steps = k.
    """
    _check_inputs(x, target, mask)
    _check_budget(eps, alpha, steps)
    return _linf_loop(
        model, x, target, _loss_objective(loss_fn), eps, alpha, steps,
        descend=targeted, mask=mask, generator=generator, evaluate_last=evaluate_last,
    )  # fmt: skip


def ifgsm(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: LossFn,
    eps: float,
    alpha: float,
    steps: int,
    *,
    targeted: bool = False,
    mask: Tensor | None = None,
) -> Tensor:
    """Final i-FGSM iterate (ti-FGSM with ``targeted`` and a target map, e.g. constant_target)."""
    *_, last = linf_iterates(
        model, x, target, loss_fn, eps, alpha, steps,
        targeted=targeted, mask=mask, evaluate_last=False,
    )  # fmt: skip
    return last.x_adv


def pgd(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: LossFn,
    eps: float,
    alpha: float,
    steps: int,
    *,
    generator: Generators,
    restarts: int = 1,
    targeted: bool = False,
    mask: Tensor | None = None,
) -> Tensor:
    """PGD with uniform random start; of ``restarts`` runs keep, per sample, the worst case.

    Worst case = highest final loss (lowest for ``targeted``). Restart r draws the r-th random
    start from ``generator`` (one for the batch, or one per sample).
    """
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts}")
    _check_generators(generator, x.shape[0])
    best_x, best_loss = None, None
    for _ in range(restarts):
        *_, last = linf_iterates(
            model, x, target, loss_fn, eps, alpha, steps,
            targeted=targeted, mask=mask, generator=generator,
        )  # fmt: skip
        loss = per_sample_loss(loss_fn, last.logits, target)
        if best_x is None:
            best_x, best_loss = last.x_adv, loss
            continue
        better = loss < best_loss if targeted else loss > best_loss
        best_x = torch.where(better.view(-1, *[1] * (x.ndim - 1)), last.x_adv, best_x)
        best_loss = torch.where(better, loss, best_loss)
    return best_x


def segpgd_iterates(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    *,
    generator: Generators | None,
    mask: Tensor | None = None,
    evaluate_last: bool = True,
) -> Iterator[Iterate]:
    """SegPGD iterates (:func:`segpgd_loss`, untargeted); random start unless generator is None.

    The λ schedule depends on ``steps``, so unlike :func:`linf_iterates` iterate k is not the
    result of a separate run with k steps.
    """
    _check_inputs(x, target, mask)
    _check_budget(eps, alpha, steps)
    if steps < 1:
        raise ValueError(f"SegPGD needs steps >= 1, got {steps}")
    return _linf_loop(
        model, x, target, lambda logits, t, k: segpgd_loss(logits, t, k, steps), eps, alpha, steps,
        descend=False, mask=mask, generator=generator, evaluate_last=evaluate_last,
    )  # fmt: skip


def segpgd(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    *,
    generator: Generators | None,
    mask: Tensor | None = None,
) -> Tensor:
    """Final SegPGD iterate (Gu et al. 2022 start uniformly in the ε ball: pass a generator)."""
    *_, last = segpgd_iterates(
        model, x, target, eps, alpha, steps, generator=generator, mask=mask, evaluate_last=False
    )
    return last.x_adv


# ---------------------------------------------------------------------------------------------
# controls


def random_sign_sweep(
    x: Tensor,
    epsilons: Sequence[float],
    *,
    generator: Generators,
    mask: Tensor | None = None,
) -> Iterator[Iterate]:
    """Random-sign noise x + ε_abs·sign(U(−1, 1)) for every ε in ``epsilons`` (no gradient).

    The control every attack must beat at equal ε: the same L∞ budget and relative scale as
    FGSM (:func:`relative_scale`), zero outside ``mask``, one draw from ``generator`` (one for
    the batch or one per sample) shared by all ε (as FGSM shares its gradient). Yields
    :class:`Iterate` with step 0 and no logits.
    """
    if x.ndim < 3 or not x.is_floating_point():
        raise ValueError(
            f"x must be a float tensor (B, C, *spatial), got {x.dtype} {tuple(x.shape)}"
        )
    _check_inputs(x, x[:, 0], mask)
    if len(epsilons) == 0:
        raise ValueError("epsilons must not be empty")
    for eps in epsilons:
        _check_budget(eps)
    x = x.detach()
    noise = _uniform(x, generator)
    direction = sign_direction(2 * noise.to(x.device) - 1, mask, descend=False)
    scale = relative_scale(x)
    return (Iterate(float(eps), 0, x + (eps * scale) * direction, None) for eps in epsilons)
