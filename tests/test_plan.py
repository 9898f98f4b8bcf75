"""The workflow's plan from a config, without Snakemake: model names, settings, targets, paths."""

import copy
import re

import pytest
import yaml
from conftest import ROOT
from snakemake.utils import validate

from segrobust import plan
from segrobust.training import TrainSettings

BASE = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def config(**sections) -> dict:
    """config/config.yaml with ``sections`` merged in (one level deep), validated against the
    schema, which fills in the defaults (as the Snakefile does)."""
    cfg = copy.deepcopy(BASE)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    validate(cfg, str(ROOT / "config" / "schema.yaml"))
    return cfg


TRAINING = {**BASE["training"],
            "distillation": {"temperatures": [20, 50], "overrides": [{"temperature": 20,
                                                                      "lr": 3.0e-3}]},
            "adversarial": {"epsilons": [0.05]},
            "pgd_adversarial": {"epsilons": [0.05], "steps": 4, "step_size": 2.5},
            "noise": {"enabled": True}}  # fmt: skip
ARCH = {"basic": {"network": "BasicUNet", "kwargs": {"features": [8] * 6}}}
EXTERNAL = [{"name": "pretrained", "checkpoint": "net.ts"}]


@pytest.fixture(scope="module")
def cfg() -> dict:
    return config(training=TRAINING, architectures=ARCH, external_models=EXTERNAL)


def test_model_names_for_every_architecture_and_the_external_ones(cfg):
    base = ["baseline", "distill_T20", "distill_T50", "adv_eps0.05", "pgdadv_eps0.05", "noise"]
    assert plan.trained_models(cfg) == base + [f"basic.{m}" for m in base]
    assert plan.models(cfg) == [*plan.trained_models(cfg), "pretrained"]
    assert plan.replicates(cfg)[-1] == ("pretrained", 0) and len(plan.replicates(cfg)) == 25
    with pytest.raises(ValueError, match=r"external_models names \['noise'\]"):
        clash = [{"name": "noise", "checkpoint": "x.ts"}]
        plan.models(config(training=TRAINING, external_models=clash))


def test_the_wildcard_patterns_match_exactly_the_planned_names(cfg):
    trained = plan.trained_pattern(cfg)
    for model in [*plan.trained_models(cfg), "teacher_T20", "basic.teacher_T50"]:
        assert re.fullmatch(trained, model), model
    for other in ("pretrained", "distill_T", "baseline2", "other.baseline", "basic"):
        assert not re.fullmatch(trained, other), other
    assert re.fullmatch(plan.external_pattern(cfg), "pretrained")
    assert not re.fullmatch(plan.external_pattern(config()), "")  # none: matches nothing


@pytest.mark.parametrize(("model", "parsed"), [
    ("baseline", ("baseline", 1.0, 0.0)), ("noise", ("noise", 1.0, 0.0)),
    ("teacher_T20", ("distill_teacher", 20.0, 0.0)),
    ("distill_T50", ("distill_student", 50.0, 0.0)),
    ("adv_eps0.05", ("adversarial", 1.0, 0.05)),
    ("pgdadv_eps0.05", ("pgd_adversarial", 1.0, 0.05)),
    ("basic.distill_T20", ("distill_student", 20.0, 0.0)), ("pretrained", ("external", 1.0, 0.0)),
])  # fmt: skip
def test_parse_model(cfg, model, parsed):
    assert plan.parse_model(cfg, model) == parsed


def test_parse_model_refuses_numbers_in_another_spelling(cfg):
    with pytest.raises(ValueError, match="model 'distill_T20.0': write the temperature as 20"):
        plan.parse_model(cfg, "distill_T20.0")
    with pytest.raises(ValueError, match="model 'adv_eps5e-2': write epsilon as 0.05"):
        plan.parse_model(cfg, "basic.adv_eps5e-2")
    assert plan.arch_of(cfg, "basic.noise") == ("basic", "noise")
    assert plan.arch_of(cfg, "other.noise") == (None, "other.noise")


def test_train_settings_build_valid_settings_with_the_pgd_step_rule(cfg):
    for model in [*plan.trained_models(cfg), "teacher_T20"]:
        TrainSettings(**plan.train_settings(cfg, model, "2"))  # validates every field
    pgd = plan.train_settings(cfg, "pgdadv_eps0.05", 1)
    assert pgd["pgd_step_size"] == pytest.approx(2.5 * 0.05 / 4)  # α = step_size·ε/k
    assert (pgd["pgd_steps"], pgd["epsilon"], pgd["seed"]) == (4, 0.05, 1)
    assert pgd["alpha"] == cfg["training"]["pgd_adversarial"]["alpha"]
    student = plan.train_settings(cfg, "distill_T20", 1)
    assert student["lr"] == 3.0e-3 and student["temperature"] == 20.0  # its override
    assert plan.train_settings(cfg, "distill_T50", 1)["lr"] == cfg["training"]["lr"]
    assert plan.train_settings(cfg, "noise", 1)["noise_radius"] > 0
    basic = plan.train_settings(cfg, "basic.baseline", 1)["architecture"]
    assert basic == {"name": "BasicUNet", "kwargs": {"features": [8] * 6}}
    assert "min_delta" not in plan.train_settings(cfg, "baseline", 1)  # fixed schedule
    early = config(training={**TRAINING, "patience": 2, "min_delta": 0.01})
    assert plan.train_settings(early, "baseline", 1)["min_delta"] == 0.01
    assert plan.teacher_of(cfg, "basic.distill_T50") == "basic.teacher_T50"
    assert plan.teacher_of(cfg, "adv_eps0.05") is None


def test_early_stopping_without_validation_subjects_is_refused():
    with pytest.raises(ValueError, match="split.val_fraction = 0 leaves no validation"):
        plan.check_training(config(training={**TRAINING, "patience": 2},
                                   split={"test_fraction": 0.3, "val_fraction": 0}))  # fmt: skip


def test_which_attacks_run_on_which_model(cfg):
    everything = ["fgsm", "ifgsm", "tifgsm", "pgd", "segpgd", "transfer_fgsm", "realistic",
                  "pgd_large", "random_sign"]  # fmt: skip
    assert plan.attacks_of(cfg, "baseline") == [a for a in everything if a != "transfer_fgsm"]
    student = plan.attacks_of(cfg, "distill_T20")
    assert "fgsm_T" in student and "transfer_fgsm" in student and "ifgsm" not in student
    assert plan.attacks_of(cfg, "basic.baseline") == [
        "fgsm", "pgd", "segpgd", "transfer_fgsm", "realistic", "pgd_large", "random_sign"
    ]  # fmt: skip
    targets = plan.attack_targets(cfg)
    assert targets[0] == ("baseline", 1, "fgsm") and len(targets) == len(set(targets))


def test_attack_settings_hold_only_what_the_family_reads(cfg):
    fgsm = plan.attack_settings(cfg, "fgsm")
    assert set(fgsm) == {"loss", "gamma", "mask", "batch", "eval_batch", "examples", "fgsm"}
    assert plan.attack_settings(cfg, "ifgsm")["table1_iteration"] == 10
    unset = config(attacks={"random_sign": {"epsilons": None}})
    noise = plan.attack_settings(unset, "random_sign")["random_sign"]
    assert noise["epsilons"] == unset["attacks"]["fgsm"]["epsilons"]  # null: FGSM's sweep
    own = config(attacks={"random_sign": {"epsilons": [0.1]}})
    assert plan.attack_settings(own, "random_sign")["random_sign"]["epsilons"] == [0.1]
    assert plan.worst_case_iterations(cfg) == {"ifgsm": 10, "tifgsm": 10}


def test_what_the_tables_and_the_primary_analysis_report(cfg):
    assert plan.table1_rows(cfg) == [["fgsm", 0.05, 1], ["ifgsm", 0.05, 10],
                                     ["tifgsm", 0.05, 10], ["pgd", 0.05, None],
                                     ["segpgd", 0.05, None]]  # fmt: skip
    assert plan.replicate_conditions(cfg) == [["fgsm", 0], ["fgsm", 0.05], ["fgsm", 0.1],
                                              ["pgd", 0.05], ["segpgd", 0.05]]  # fmt: skip
    pairs = plan.defence_comparisons(cfg)
    assert ["basic.noise", "basic.baseline"] in pairs and ["noise", "baseline"] in pairs
    assert all(model != "pretrained" for model, _ in pairs) and len(pairs) == 10
    assert plan.primary_settings(cfg)["attack"] == "pgd"
    with pytest.raises(ValueError, match="exceeds attacks.ifgsm.steps = 5"):
        plan.table1_rows(config(attacks={"ifgsm": {"steps": 5}}))


@pytest.mark.parametrize(("sections", "message"), [
    ({"attacks": {"families": ["fgsm"]}}, "is not in attacks.families"),
    ({"attacks": {"baseline_only": ["pgd"]}}, "is in attacks.baseline_only"),
    ({"statistics": {"primary": {"attack": "fgsm", "eps": 0.055}}}, "0.055 is not a budget fgsm"),
])  # fmt: skip
def test_a_primary_analysis_that_cannot_run_is_refused(sections, message):
    with pytest.raises(ValueError, match=message):
        plan.primary_settings(config(**sections))


def test_the_figures_the_attacks_can_fill(cfg):
    assert plan.figures(cfg) == ["fig1", "fig2", "supp_fig2", "fig3", "fig4", "fig5",
                                 "robustness", "realistic"]  # fmt: skip
    few = config(attacks={"families": ["fgsm", "realistic"]})
    assert plan.figures(few) == ["fig3", "fig4", "fig5", "realistic"]
    with pytest.raises(ValueError, match="figures.fig1_eps = 0.07 must be listed"):
        plan.figures(config(figures={"fig1_eps": 0.07}))
    assert plan.figure_examples(cfg, "fig1") == (["baseline"], ["fgsm", "ifgsm", "tifgsm"])
    assert plan.figure_examples(cfg, "fig5") == (plan.models(cfg), ["fgsm"])
    assert plan.figure_examples(cfg, "fig3") == ([], [])


def test_paths_fill_the_wildcards_given_and_keep_the_others(tmp_path):
    assert plan.path("results", "model") == "results/models/{model}/seed{seed}/model.pt"
    assert plan.path("results", "model", seed=0) == "results/models/{model}/seed0/model.pt"
    assert (plan.path("r/", "examples", model="basic.noise", seed=2, attack="fgsm")
            == "r/attacks/basic.noise/seed2/fgsm_examples")  # fmt: skip
    with pytest.raises(ValueError, match="unknown kind of file 'plot'"):
        plan.path("results", "plot")
    done = tmp_path / "checkpoints" / "baseline" / "seed1.ckpt"
    running = tmp_path / "checkpoints" / "baseline" / "seed2.ckpt"
    for ckpt in (done, running):
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.touch()
    model = tmp_path / "models" / "baseline" / "seed1" / "model.pt"
    model.parent.mkdir(parents=True)
    model.touch()
    assert plan.finished_checkpoints(tmp_path) == [done]
