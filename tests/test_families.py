"""The registry of attack families against the places that must agree with it."""

import re

import pytest
import yaml
from conftest import ROOT

from segrobust import audit, evaluation, perturbations, plots, worst_case
from segrobust.families import (
    ARTEFACTS,
    FAMILIES,
    Family,
    names,
    of,
    only,
    pattern,
    single_step_first,
)
from segrobust.models import registry

SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
ATTACKS = SCHEMA["properties"]["attacks"]["properties"]


def test_the_schemas_lists_of_families_are_the_registrys():
    """config/schema.yaml is static YAML: its attack lists are checked here, in order."""
    assert ATTACKS["families"]["items"]["enum"] == list(FAMILIES)
    assert ATTACKS["families"]["default"] == list(FAMILIES)
    everywhere = names(runs_on="every model")
    assert ATTACKS["baseline_only"]["items"]["enum"] == everywhere
    assert ATTACKS["baseline_only"]["default"] == names(baseline_only=True) == ["ifgsm", "tifgsm"]
    primary = SCHEMA["properties"]["statistics"]["properties"]["primary"]["properties"]
    assert primary["attack"]["enum"] == names(headline=True)
    realistic = ATTACKS["realistic"]["properties"]["kinds"]
    assert realistic["items"]["enum"] == realistic["default"] == list(ARTEFACTS)


def test_every_family_has_its_config_section_with_its_budget():
    for name, family in FAMILIES.items():
        section = ATTACKS[name]["properties"]
        if family.budget:
            assert family.budget in section, name
        if family.iterates:
            assert "steps" in section, name  # Table 1 reports one of its iterates


def test_the_schemas_networks_are_the_registrys_trainable_ones():
    network = SCHEMA["definitions"]["architecture"]["properties"]["network"]
    assert network["enum"] == list(registry.NAMES)
    assert "nnUNet" in registry.NETWORKS and "nnUNet" not in registry.NAMES  # never trained


def test_the_attack_wildcard_matches_exactly_the_family_names():
    for name in FAMILIES:
        assert re.fullmatch(pattern(), name)
    for other in ("fgsm_", "pgd_larg", "none", "motion", "transfer", "FGSM"):
        assert not re.fullmatch(pattern(), other)
    snakefile = (ROOT / "Snakefile").read_text()
    assert "attack=ATTACK_PATTERN" in snakefile and "random_sign" not in snakefile


def test_every_runner_is_one_familys_and_pgd_large_is_pgd():
    assert {f.runner for f in FAMILIES.values()} == set(evaluation.RUNNERS)
    assert of("pgd_large").runner == of("pgd").runner
    assert evaluation.RUNNERS["pgd"].stream.__name__ == "_pgd"


def test_what_the_audit_the_worst_case_and_the_figures_read():
    adversarial = {"fgsm", "ifgsm", "tifgsm", "pgd", "segpgd", "fgsm_T", "transfer_fgsm",
                   "pgd_large"}  # fmt: skip
    assert set(worst_case.ADVERSARIAL) == set(audit.ADVERSARIAL) == adversarial
    assert audit.ADVERSARIAL[:3] == ("fgsm", "fgsm_T", "transfer_fgsm")  # single-step first
    assert audit.UNTARGETED_ITERATIVE == ("ifgsm", "pgd", "segpgd", "pgd_large")
    assert (audit.NOISE, audit.LARGE, audit.TRANSFER) == ("random_sign", "pgd_large",
                                                         "transfer_fgsm")  # fmt: skip
    assert plots.ROBUSTNESS_ATTACKS == ("fgsm_T", "pgd", "segpgd", "transfer_fgsm")
    assert plots.REALISTIC_KINDS == perturbations.PERTURBATIONS == tuple(ARTEFACTS)
    assert set(perturbations.LEVELS) == set(perturbations.FIXED) == set(ARTEFACTS)


def test_single_step_first_keeps_the_registry_order_within_each_group():
    assert single_step_first(["segpgd", "fgsm_T", "ifgsm", "fgsm"]) == [
        "fgsm", "fgsm_T", "ifgsm", "segpgd"
    ]  # fmt: skip


def test_bad_names_and_fields_are_refused():
    with pytest.raises(ValueError, match=r"unknown attack 'cw'; expected one of \['fgsm'"):
        of("cw")
    with pytest.raises(ValueError, match="expected one attack family with"):
        only(kind="white-box")
    with pytest.raises(ValueError, match="family x: kind must be one of"):
        Family("x", "grey-box", "X", "fgsm")
    with pytest.raises(ValueError, match="family x: runs_on must be one of"):
        Family("x", "white-box", "X", "fgsm", runs_on="students")
