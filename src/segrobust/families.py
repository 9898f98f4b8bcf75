"""The attack families: one registry that the workflow, the config schema, evaluation, the
tables, the figures, the audit and the worst case read.

A family is what one ``attack`` job runs on one model replicate (config ``attacks.<name>``).
Its ``kind`` says what it is:

- ``white-box``: a gradient attack crafted on the model under test;
- ``transfer``: a gradient attack crafted on another model (``attacks.transfer_fgsm.source``)
  and evaluated on the model under test (black box);
- ``control``: no gradient; the audit's yardstick every attack must beat (``random_sign``);
- ``artefact``: realistic MR artefacts at graded severities (:data:`ARTEFACTS`).

White-box and transfer families are the *adversarial* ones: the worst case takes its minimum
over them, the audit checks each against the control. The other fields say how the family is
configured and reported (``budget``: a sweep of ``epsilons`` or one ``eps``; ``iterates``:
every iterate up to ``steps`` is recorded and Table 1 reports ``statistics.table1_iteration``),
on which models it runs, and its role in the audit. Families that run the same procedure share
a ``runner`` (:data:`segrobust.evaluation.RUNNERS`): ``pgd_large`` is ``pgd`` at a large
budget. Adding a family is one entry here, one runner (or a shared one) and its config
section in ``config/schema.yaml`` (a test checks the schema's lists against this registry).
"""

import re
from dataclasses import dataclass

KINDS: tuple[str, ...] = ("white-box", "transfer", "control", "artefact")
RUNS_ON: tuple[str, ...] = ("every model", "distilled students", "every model but the source")
AUDIT_ROLES: tuple[str, ...] = ("", "noise control", "large budget")


@dataclass(frozen=True)
class Family:
    """One attack family (module docstring)."""

    name: str
    kind: str
    label: str  # display name in tables and figures
    runner: str  # segrobust.evaluation.RUNNERS key
    budget: str = "eps"  # config key of its budgets: "epsilons" (a sweep), "eps" or "" (none)
    iterative: bool = False  # several gradient steps
    iterates: bool = False  # every iterate recorded; reported at statistics.table1_iteration
    targeted: bool = False  # steps towards a target map, not up the loss
    runs_on: str = "every model"
    baseline_only: bool = False  # in the default of attacks.baseline_only
    audit: str = ""  # role in the audit beyond "beats the noise control" (AUDIT_ROLES)
    robustness: bool = False  # a group of the robustness figure (beside FGSM at one ε)

    def __post_init__(self) -> None:
        allowed = {"kind": KINDS, "runs_on": RUNS_ON, "audit": AUDIT_ROLES,
                   "budget": ("epsilons", "eps", "")}  # fmt: skip
        for field, values in allowed.items():
            if getattr(self, field) not in values:
                raise ValueError(f"family {self.name}: {field} must be one of {values}")

    @property
    def adversarial(self) -> bool:
        """A gradient attack (white-box or transfer): counted by the worst case and the audit."""
        return self.kind in ("white-box", "transfer")

    @property
    def headline(self) -> bool:
        """A white-box attack of every model that is not an audit control: a row of Table 1
        and a possible attack of the primary analysis."""
        return self.kind == "white-box" and self.runs_on == "every model" and not self.audit


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("fgsm", "white-box", "FGSM", "fgsm", budget="epsilons"),
        Family("ifgsm", "white-box", "i-FGSM", "iterates", iterative=True, iterates=True,
               baseline_only=True),
        Family("tifgsm", "white-box", "ti-FGSM", "iterates", iterative=True, iterates=True,
               targeted=True, baseline_only=True),
        Family("pgd", "white-box", "PGD", "pgd", iterative=True, robustness=True),
        Family("segpgd", "white-box", "SegPGD", "segpgd", iterative=True, robustness=True),
        Family("fgsm_T", "white-box", "T-aware FGSM", "tempered_fgsm", budget="epsilons",
               runs_on="distilled students", robustness=True),
        Family("transfer_fgsm", "transfer", "Transfer FGSM", "transfer", budget="epsilons",
               runs_on="every model but the source", robustness=True),
        Family("realistic", "artefact", "Realistic artefacts", "artefacts", budget=""),
        Family("pgd_large", "white-box", "PGD (large ε)", "pgd", iterative=True,
               audit="large budget"),
        Family("random_sign", "control", "Random sign", "sign_noise", budget="epsilons",
               audit="noise control"),
    )
}  # fmt: skip
# The realistic family's artefacts (segrobust.perturbations), each its own ``attack`` value.
ARTEFACTS: dict[str, str] = {
    "motion": "Motion",
    "ghosting": "Ghosting",
    "bias_field": "Bias field",
    "spike": "Spike",
    "gaussian_noise": "Gaussian noise",
    "rician_noise": "Rician noise",
}


def names(**where: object) -> list[str]:
    """Names of the families (in registry order) whose fields or properties equal ``where``,
    e.g. ``names(adversarial=True)``, ``names(runner="pgd")``."""
    return [
        name
        for name, family in FAMILIES.items()
        if all(getattr(family, key) == value for key, value in where.items())
    ]


def of(name: str) -> Family:
    """The family ``name``; ValueError listing the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown attack {name!r}; expected one of {list(FAMILIES)}")
    return FAMILIES[name]


def single_step_first(family_names: list[str]) -> list[str]:
    """``family_names`` with the single-step attacks first, then the iterative ones, each in
    registry order (the order of the audit's rows and the robustness figure's groups)."""
    order = list(FAMILIES)
    return sorted(family_names, key=lambda n: (FAMILIES[n].iterative, order.index(n)))


def pattern() -> str:
    """A regular expression matching exactly the family names (the ``attack`` wildcard)."""
    return "|".join(map(re.escape, FAMILIES))


def only(**where: object) -> str:
    """The one family with ``where`` (e.g. ``audit="noise control"``); ValueError otherwise."""
    found = names(**where)
    if len(found) != 1:
        raise ValueError(f"expected one attack family with {where}, found {found}")
    return found[0]
