"""What a config asks the workflow to do, testable without Snakemake.

Every function takes the validated config (``config/schema.yaml``) and answers one question
the rules ask (``rules/common.smk`` wraps them): which models and replicates exist and how each
trains (:func:`train_settings`), which attack families run on which model and with which
settings (:func:`attacks_of`, :func:`attack_settings`), what the tables, the primary analysis
and the figures report, and where every file lives (:func:`path`: the one layout of the
results directory, used by the rules and by the scripts).

Model names: ``[<architecture>.]<strategy>``, the strategy one of ``baseline``, ``noise``,
``teacher_T<T>``, ``distill_T<T>``, ``adv_eps<ε>``, ``pgdadv_eps<ε>`` (:data:`STRATEGIES`; T
and ε in their one spelling, :func:`fmt`), the optional prefix a key of ``architectures:``;
entries of ``external_models:`` are models under their own name.
"""

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segrobust.families import FAMILIES, names, of, only
from segrobust.models.registry import DEFAULT
from segrobust.results import same_eps

Config = Mapping[str, Any]

# model-name prefix -> (training strategy, the number the name carries after it)
STRATEGIES: dict[str, tuple[str, str | None]] = {
    "baseline": ("baseline", None),
    "noise": ("noise", None),
    "teacher_T": ("distill_teacher", "temperature"),
    "distill_T": ("distill_student", "temperature"),
    "adv_eps": ("adversarial", "epsilon"),
    "pgdadv_eps": ("pgd_adversarial", "epsilon"),
}
NUMBER = r"[0-9.e+\-]+"  # what a model name's number may look like (fmt gives its spelling)

# The results directory: one template per kind of file, ``{model}/seed{seed}`` per replicate.
REPLICATE = "{model}/seed{seed}"
LAYOUT: dict[str, str] = {
    "split": "split.csv",
    "preprocessed": "preprocessed",
    "model": f"models/{REPLICATE}/model.pt",
    "training_log": f"models/{REPLICATE}/training_log.csv",
    "checkpoint": "checkpoints/{model}/seed{seed}.ckpt",
    "clean": f"evaluation/{REPLICATE}/clean.csv",
    "predictions": f"evaluation/{REPLICATE}/predictions",
    "attack": f"attacks/{REPLICATE}/{{attack}}.csv",
    "examples": f"attacks/{REPLICATE}/{{attack}}_examples",
    "gradients": f"audit/{REPLICATE}/gradients.csv",
    "results": "results.csv",
}


# --------------------------------------------------------------------------- paths


def path(root: str | Path, kind: str, **wildcards: object) -> str:
    """The file of ``kind`` (:data:`LAYOUT`) under the results directory ``root`` with the
    given ``wildcards`` filled in; those not given stay ``{name}`` (a Snakemake pattern)."""
    if kind not in LAYOUT:
        raise ValueError(f"unknown kind of file {kind!r}; expected one of {list(LAYOUT)}")
    template = f"{Path(root).as_posix()}/{LAYOUT[kind]}"
    return re.sub(r"\{(\w+)\}", lambda m: str(wildcards.get(m[1], m[0])), template)


def finished_checkpoints(root: str | Path) -> list[Path]:
    """The training checkpoints under ``root`` whose model file exists (safe to delete)."""
    done = []
    for ckpt in Path(root, "checkpoints").glob("*/seed*.ckpt"):
        seed = ckpt.stem.removeprefix("seed")
        if Path(path(root, "model", model=ckpt.parent.name, seed=seed)).exists():
            done.append(ckpt)
    return done


# --------------------------------------------------------------------------- models


def fmt(value: object) -> str:
    """The one spelling of a number in file names: 0.05, 0.050 and 5e-2 all give '0.05'."""
    return f"{float(value):g}"


def architectures(config: Config) -> dict[str, Any]:
    """The ``architectures:`` entries (key -> {network, kwargs})."""
    return dict(config["architectures"])


def external(config: Config) -> dict[str, dict]:
    """The ``external_models:`` entries by name."""
    return {entry["name"]: entry for entry in config["external_models"]}


def trained_models(config: Config) -> list[str]:
    """Every trained model: the strategies the config asks for, for the default network and
    then for each ``architectures:`` key (``<key>.<strategy>``)."""
    train = config["training"]
    base = ["baseline"]
    base += [f"distill_T{fmt(t)}" for t in train["distillation"]["temperatures"]]
    base += [f"adv_eps{fmt(e)}" for e in train["adversarial"]["epsilons"]]
    base += [f"pgdadv_eps{fmt(e)}" for e in train["pgd_adversarial"]["epsilons"]]
    base += ["noise"] if train["noise"]["enabled"] else []
    return [f"{arch}.{m}" if arch else m for arch in [None, *architectures(config)] for m in base]


def models(config: Config) -> list[str]:
    """Every evaluated model: the trained ones, then the external ones; ValueError when an
    external model takes a trained model's name."""
    trained, imported = trained_models(config), list(external(config))
    if clash := set(imported) & set(trained):
        raise ValueError(f"external_models names {sorted(clash)} are also names of trained models")
    return trained + imported


def trained_pattern(config: Config) -> str:
    """A regular expression matching the names of trained models (and the teachers)."""
    numbered = [f"{re.escape(p)}{NUMBER}" for p, (_, n) in STRATEGIES.items() if n]
    plain = [re.escape(p) for p, (_, n) in STRATEGIES.items() if not n]
    arch = architectures(config)
    prefix = rf"(?:(?:{'|'.join(map(re.escape, arch))})\.)?" if arch else ""
    return rf"{prefix}(?:{'|'.join(plain + numbered)})"


def external_pattern(config: Config) -> str:
    """A regular expression matching the external models' names (nothing without any)."""
    return "|".join(map(re.escape, external(config))) or "(?!)"


def arch_of(config: Config, model: str) -> tuple[str | None, str]:
    """(``architectures`` key or None for the default network, model name without it)."""
    arch, _, rest = model.partition(".")
    return (arch, rest) if arch in architectures(config) else (None, model)


def parse_model(config: Config, model: str) -> tuple[str, float, float]:
    """(strategy, temperature, epsilon) of a model name; rejects non-canonical numbers."""
    if model in external(config):
        return "external", 1.0, 0.0
    name = arch_of(config, model)[1]
    for prefix, (strategy, number) in STRATEGIES.items():
        if number is None and name == prefix:
            return strategy, 1.0, 0.0
        if number is not None and name.startswith(prefix):
            value = name.removeprefix(prefix)
            if fmt(value) != value:
                what = "the temperature" if number == "temperature" else "epsilon"
                raise ValueError(f"model {name!r}: write {what} as {fmt(value)}")
            if number == "temperature":
                return strategy, float(value), 0.0
            return strategy, 1.0, float(value)
    return name, 1.0, 0.0


def architecture(config: Config, model: str) -> dict | None:
    """The network {name, kwargs} (:func:`segrobust.models.registry.build`) of a trained
    model, or of an external model's state_dict (None: TorchScript)."""
    arch = arch_of(config, model)[0]
    if model in external(config):
        entry = external(config)[model]["architecture"]
    elif arch is None:
        entry = {"network": DEFAULT, "kwargs": config["model"]}  # `model:` configures it
    else:
        entry = architectures(config)[arch]
    return entry and {"name": entry["network"], "kwargs": entry["kwargs"]}


def seeds_of(config: Config, model: str) -> list[int]:
    """The replicates of ``model``: one per training seed; [0] for an external model."""
    return [0] if model in external(config) else list(config["training"]["seeds"])


def replicates(config: Config) -> list[tuple[str, int]]:
    """(model, seed) of every replicate of every model."""
    return [(m, s) for m in models(config) for s in seeds_of(config, m)]


def teacher_of(config: Config, model: str) -> str | None:
    """The teacher of a distilled student (the same T), None for any other model."""
    strategy, temperature, _ = parse_model(config, model)
    if strategy != "distill_student":
        return None
    arch = arch_of(config, model)[0]
    teacher = f"teacher_T{fmt(temperature)}"
    return f"{arch}.{teacher}" if arch else teacher


def train_settings(config: Config, model: str, seed: int | str) -> dict:
    """Everything replicate ``seed`` of ``model`` depends on (TrainSettings fields); PGD
    adversarial training steps ``step_size · ε / steps`` per step."""
    strategy, temperature, epsilon = parse_model(config, model)
    train = config["training"]
    settings = {
        "strategy": strategy,
        "epochs": train["epochs"],
        "patience": train["patience"],
        "lr": train["lr"],
        "batch_size": train["batch_size"],
        "seed": int(seed),
        "loss_variant": config["loss"]["variant"],
        "gamma": config["loss"]["gamma"],
        "temperature": temperature,
        "epsilon": epsilon,
        "augment": train["augment"],
        "amp": train["amp"],
        "conv_kernel": train["conv_kernel"],
        "architecture": architecture(config, model),
    }
    if train["patience"] is not None:  # min_delta means nothing on the fixed schedule
        settings["min_delta"] = train["min_delta"]
    if strategy in ("distill_teacher", "distill_student"):
        for override in train["distillation"]["overrides"]:
            if float(override["temperature"]) == temperature:
                settings.update({k: v for k, v in override.items() if k != "temperature"})
    if strategy in ("adversarial", "pgd_adversarial", "noise"):
        settings["alpha"] = train["adversarial"]["alpha"]
        settings["update"] = train["adversarial"]["update"]
    if strategy in ("adversarial", "pgd_adversarial"):
        settings["example_mode"] = train["adversarial"]["example_mode"]
    if strategy == "pgd_adversarial":
        pgd = train["pgd_adversarial"]
        settings["alpha"] = pgd["alpha"]
        settings["pgd_steps"] = pgd["steps"]
        settings["pgd_step_size"] = pgd["step_size"] * epsilon / pgd["steps"]
        settings["random_start"] = pgd["random_start"]
    if strategy == "noise":
        settings["noise_radius"] = train["noise"]["radius"]
    return settings


def check_training(config: Config) -> None:
    """ValueError when early stopping has no validation subjects to stop on."""
    if config["training"]["patience"] is not None and config["split"]["val_fraction"] == 0:
        raise ValueError(
            f"training.patience = {config['training']['patience']} stops training on validation "
            "Dice, but split.val_fraction = 0 leaves no validation subjects: raise it, or set "
            "training.patience: null for the fixed schedule of training.epochs"
        )


def defence_comparisons(config: Config) -> list[list[str]]:
    """[defence, reference] pairs of the primary and exploratory analyses: every trained model
    but a baseline against the baseline of its architecture. External models are left out:
    they are not training procedures and have one replicate (Tables 1–2 compare them)."""
    pairs = []
    for model in trained_models(config):
        arch, name = arch_of(config, model)
        if name != "baseline":
            pairs.append([model, f"{arch}.baseline" if arch else "baseline"])
    return pairs


# --------------------------------------------------------------------------- attacks


def transfer_source(config: Config) -> str:
    """The model transfer attacks are crafted on (the transfer family's ``source``)."""
    return config["attacks"][only(kind="transfer")]["source"]


def attacks_of(config: Config, model: str) -> list[str]:
    """The attack families run on ``model``: each family where it runs (registry
    ``runs_on``), those of ``attacks.baseline_only`` on the baseline only."""
    attacks = config["attacks"]
    runs = {
        "every model": True,
        "distilled students": parse_model(config, model)[0] == "distill_student",
        "every model but the source": model != transfer_source(config),
    }
    return [
        a
        for a in attacks["families"]
        if runs[of(a).runs_on] and not (a in attacks["baseline_only"] and model != "baseline")
    ]


def attack_targets(config: Config) -> list[tuple[str, int, str]]:
    """(model, seed, attack) of every attack job."""
    return [(m, s, a) for m, s in replicates(config) for a in attacks_of(config, m)]


def attack_settings(config: Config, attack: str) -> dict:
    """Only the settings the attack family ``attack`` depends on."""
    cfg = config["attacks"]
    keys = ("loss", "gamma", "mask", "batch", "eval_batch", "examples", attack)
    settings = {key: cfg[key] for key in keys}
    if of(attack).iterates:  # the iterate Table 1 and Fig. 1 report
        settings["table1_iteration"] = config["statistics"]["table1_iteration"]
    if of(attack).kind == "control" and cfg[attack]["epsilons"] is None:
        settings[attack] = {"epsilons": cfg["fgsm"]["epsilons"]}  # FGSM's sweep
    return settings


def worst_case_iterations(config: Config) -> dict[str, int]:
    """The iterate of each family with recorded iterates that the worst case takes: Table 1's
    (the others record their last only)."""
    return {a: config["statistics"]["table1_iteration"] for a in names(iterates=True)}


def budgets(config: Config, attack: str) -> list[float]:
    """The ε values ``attack`` runs at: its sweep, or its one ``eps``."""
    section = config["attacks"][attack]
    return list(section["epsilons"]) if of(attack).budget == "epsilons" else [section["eps"]]


def table1_rows(config: Config) -> list[list]:
    """(attack, ε, iteration or None for the last) rows of Table 1: each configured headline
    family (:attr:`segrobust.families.Family.headline`) — a sweep at
    ``statistics.table1_fgsm_eps``, recorded iterates at ``statistics.table1_iteration``."""
    stats, attacks = config["statistics"], config["attacks"]
    iteration, rows = stats["table1_iteration"], []
    for attack in (a for a in names(headline=True) if a in attacks["families"]):
        family = of(attack)
        if family.iterates and iteration > attacks[attack]["steps"]:
            raise ValueError(
                f"statistics.table1_iteration = {iteration} exceeds attacks.{attack}.steps = "
                f"{attacks[attack]['steps']}: that iterate is never computed"
            )
        if family.budget == "epsilons":
            rows.append([attack, stats["table1_fgsm_eps"], 1])
        else:
            rows.append([attack, attacks[attack]["eps"], iteration if family.iterates else None])
    return rows


def replicate_conditions(config: Config) -> list[list]:
    """(attack, ε) settings of the exploratory defence comparisons (tables/replicates.md):
    Table 2's FGSM budgets, then the one-budget headline families without recorded iterates
    (PGD, SegPGD) at their budgets when configured."""
    attacks = config["attacks"]
    conditions = [["fgsm", e] for e in config["statistics"]["table2_eps"]]
    single = names(headline=True, iterates=False, budget="eps")
    return conditions + [[a, attacks[a]["eps"]] for a in single if a in attacks["families"]]


def primary_settings(config: Config) -> dict:
    """statistics.primary, checked against what runs: its attack must attack every defence
    white-box at its ε (ValueError otherwise)."""
    primary, attacks = config["statistics"]["primary"], config["attacks"]
    attack, eps = primary["attack"], float(primary["eps"])
    where = f"statistics.primary.attack = {attack}"
    if attack not in attacks["families"]:
        raise ValueError(f"{where} is not in attacks.families: the primary analysis never runs")
    if attack in attacks["baseline_only"]:
        raise ValueError(f"{where} is in attacks.baseline_only: no defence is attacked with it")
    if not same_eps(budgets(config, attack), eps).any():
        raise ValueError(
            f"statistics.primary.eps = {eps:g} is not a budget {attack} runs at: "
            f"{budgets(config, attack)}"
        )
    return primary


def adversarial_configured(config: Config) -> bool:
    """Whether an adversarial family runs (the worst case needs one)."""
    return any(FAMILIES[a].adversarial for a in config["attacks"]["families"])


# --------------------------------------------------------------------------- figures


def figures(config: Config) -> list[str]:
    """The figures the configured models and attacks can fill (ValueError for an example ε
    that no attack saves)."""
    families = set(config["attacks"]["families"])
    train = config["training"]
    iterates = set(names(iterates=True))
    wanted = {
        "fig1": {"fgsm", *iterates} <= families,
        "fig2": iterates <= families,
        "supp_fig2": iterates <= families,
        "fig3": "fgsm" in families and bool(train["distillation"]["temperatures"]),
        "fig4": "fgsm" in families and bool(train["adversarial"]["epsilons"]),
        "fig5": "fgsm" in families,
        "robustness": bool(families & set(names(robustness=True))),
        "realistic": bool(families & set(names(kind="artefact"))),
    }
    examples = config["attacks"]["examples"]
    for key in ("fig1_eps", "fig5_eps"):
        eps = config["figures"][key]
        if eps not in examples["eps"] or eps not in config["attacks"]["fgsm"]["epsilons"]:
            raise ValueError(
                f"figures.{key} = {eps} must be listed in attacks.fgsm.epsilons and "
                "attacks.examples.eps (the figure shows a saved example at that ε)"
            )
    if examples["n_subjects"] < 1:
        wanted["fig1"] = wanted["fig5"] = False
    return [name for name, ok in wanted.items() if ok]


def figure_examples(config: Config, figure: str) -> tuple[list[str], list[str]]:
    """(models, attacks) whose saved examples an image figure shows (Fig. 1: the baseline under
    FGSM and the families with recorded iterates; Fig. 5: every model under FGSM); ([], [])
    for the other figures."""
    if figure == "fig1":
        return ["baseline"], ["fgsm", *names(iterates=True)]
    if figure == "fig5":
        return models(config), ["fgsm"]
    return [], []
