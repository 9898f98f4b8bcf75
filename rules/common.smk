# Helpers for the rules: subject list, target lists, number formatting, code digests.
import re
from pathlib import Path

from snakemake.logging import logger

from segrobust import data as sr_data
from segrobust import digests as sr_digests
from segrobust import external as sr_external
from segrobust import layouts as sr_layouts
from segrobust import synthetic as sr_synthetic

R = config["results"]
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"
ENV = "../envs/segrobust.yaml"
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"


def code_digest(script):
    """Digest of the package modules that workflow/scripts/<script>.py imports, transitively
    (segrobust.digests): a change of the method re-runs exactly the jobs that use it."""
    return sr_digests.code_digest(SCRIPTS / f"{script}.py")


def _raw_subjects():
    """The cohort's subjects (segrobust.data.Subject) from the configured data source."""
    if config["data"]["source"] == "synthetic":
        syn = config["data"]["synthetic"]
        try:
            sr_synthetic.check_anatomy(syn["anatomy"], syn["shape"], syn["spacing"])
        except ValueError as error:
            raise ValueError(f"data.synthetic (anatomy: {syn['anatomy']}): {error}") from None
        root = Path(R) / "raw" / "synthetic"
        plan = sr_synthetic.cohort_plan(syn["n_subjects"], syn["lgg_fraction"])
        return [
            sr_data.Subject(
                sid,
                grade,
                {k: root / grade / sid / f"{sid}_{k}.nii.gz" for k in sr_data.FILE_KINDS},
            )
            for sid, grade in plan
        ]
    return sr_layouts.discover_subjects(config["data"]["root"], config["data"]["layout"])


RAW = {s.id: s for s in _raw_subjects()}
SUBJECTS = sorted(RAW)
GRADES = {sid: s.grade for sid, s in RAW.items()}
# Checksums of raw files the workflow does not write itself: a replaced file re-runs its subject.
RAW_SHA256 = (
    {}
    if config["data"]["source"] == "synthetic"
    else sr_data.raw_checksums(list(RAW.values()), f"{R}/raw_manifest.tsv")
)
_cohort_warning = sr_data.check_cohort(
    GRADES,
    config["split"]["test_fraction"],
    config["split"]["val_fraction"],
    alpha=config["statistics"]["alpha"],
)
if _cohort_warning:
    logger.warning(f"segrobust: {_cohort_warning}")
if config["training"]["patience"] is not None and config["split"]["val_fraction"] == 0:
    raise ValueError(
        f"training.patience = {config['training']['patience']} stops training on validation "
        "Dice, but split.val_fraction = 0 leaves no validation subjects: raise it, or set "
        "training.patience: null for the fixed schedule of training.epochs"
    )


def raw_files(wildcards):
    return {key: str(path) for key, path in RAW[wildcards.subject].files.items()}


PREPROCESSED = f"{R}/preprocessed"


def preprocessed():
    return expand(f"{PREPROCESSED}/{{subject}}/image.npy", subject=SUBJECTS)


def fmt(value):
    """The one spelling of a number in file names: 0.05, 0.050 and 5e-2 all give '0.05'."""
    return f"{float(value):g}"


def _models():
    train = config["training"]
    models = ["baseline"]
    models += [f"distill_T{fmt(t)}" for t in train["distillation"]["temperatures"]]
    models += [f"adv_eps{fmt(e)}" for e in train["adversarial"]["epsilons"]]
    models += [f"pgdadv_eps{fmt(e)}" for e in train["pgd_adversarial"]["epsilons"]]
    models += ["noise"] if train["noise"]["enabled"] else []
    return [f"{arch}.{m}" if arch else m for arch in [None, *ARCHITECTURES] for m in models]


# Architectures and external models. The default network (config `model:`, the Isensee UNet)
# trains the models `baseline`, `adv_eps0.05`, ...; each entry `key` of `architectures:` trains
# the same set as `key.baseline`, `key.adv_eps0.05`, ... Entries of `external_models:` are
# evaluated and attacked under their own name, never trained.
ARCHITECTURES = config["architectures"]
EXTERNAL = {entry["name"]: entry for entry in config["external_models"]}
TRAINED = _models()
MODELS = TRAINED + list(EXTERNAL)
_STRATEGY_NAMES = (
    r"baseline|noise|(?:teacher|distill)_T[0-9.e+]+|adv_eps[0-9.e\-]+|pgdadv_eps[0-9.e\-]+"
)
_ARCH_PREFIX = rf"(?:(?:{'|'.join(map(re.escape, ARCHITECTURES))})\.)?" if ARCHITECTURES else ""
TRAINED_PATTERN = rf"{_ARCH_PREFIX}(?:{_STRATEGY_NAMES})"
EXTERNAL_PATTERN = "|".join(map(re.escape, EXTERNAL)) or "(?!)"
MODEL_PATTERN = f"{TRAINED_PATTERN}|{EXTERNAL_PATTERN}"
if clash := set(EXTERNAL) & set(TRAINED):
    raise ValueError(f"external_models names {sorted(clash)} are also names of trained models")


def arch_of(model):
    """(architectures key or None for the default network, model name without it)."""
    arch, _, rest = model.partition(".")
    return (arch, rest) if arch in ARCHITECTURES else (None, model)


def architecture(model):
    """The network {name, kwargs} (segrobust.models.registry.build) of a trained model, or of an
    external model's state_dict (None: TorchScript)."""
    arch = arch_of(model)[0]
    if model in EXTERNAL:
        entry = EXTERNAL[model]["architecture"]
    elif arch is None:
        entry = {"network": "UNet3D", "kwargs": config["model"]}
    else:
        entry = ARCHITECTURES[arch]
    return entry and {"name": entry["network"], "kwargs": entry["kwargs"]}


def inference_settings(model):
    """How evaluation and attacks run ``model`` (segrobust.inference.wrap): `inference:` for
    trained models; for an external model its conventions, from its entry and what its own
    files declare (segrobust.external.settings)."""
    if model not in EXTERNAL:
        return config["inference"]
    return sr_external.settings(EXTERNAL[model])


def external_files(wildcards):
    """The files the import of an external model reads (checkpoint, or result folder / bundle
    files): a changed file re-imports it."""
    return sr_external.files(EXTERNAL[wildcards.model])
SEEDS = config["training"]["seeds"]
# one spelling of a trained replicate in every path: <model>/seed<seed>; an external model is
# one replicate, seed0
MODEL_DIR = "{model}/seed{seed}"


def seeds_of(model):
    """The replicates of ``model``: one per training seed; [0] for an external model."""
    return [0] if model in EXTERNAL else SEEDS


def model_dirs(pattern):
    """``pattern`` (with {model} and {seed}) for every replicate of every model."""
    return [pattern.format(model=m, seed=s) for m in MODELS for s in seeds_of(m)]


def parse_model(model):
    """(strategy, temperature, epsilon) of a model name; rejects non-canonical numbers."""
    if model in EXTERNAL:
        return "external", 1.0, 0.0
    model = arch_of(model)[1]
    for prefix, strategy in (("teacher_T", "distill_teacher"), ("distill_T", "distill_student")):
        if model.startswith(prefix):
            value = model.removeprefix(prefix)
            if fmt(value) != value:
                raise ValueError(f"model {model!r}: write the temperature as {fmt(value)}")
            return strategy, float(value), 0.0
    for prefix, strategy in (("adv_eps", "adversarial"), ("pgdadv_eps", "pgd_adversarial")):
        if model.startswith(prefix):
            value = model.removeprefix(prefix)
            if fmt(value) != value:
                raise ValueError(f"model {model!r}: write epsilon as {fmt(value)}")
            return strategy, 1.0, float(value)
    return model, 1.0, 0.0


def train_settings(model, seed):
    """Everything replicate ``seed`` of ``model`` depends on (TrainSettings fields)."""
    strategy, temperature, epsilon = parse_model(model)
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
        "architecture": architecture(model),
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


def teacher_of(wildcards):
    """The teacher of a distilled student: the same seed's teacher at the same T."""
    strategy, temperature, _ = parse_model(wildcards.model)
    if strategy != "distill_student":
        return {}
    arch = arch_of(wildcards.model)[0]
    teacher = f"{arch}.teacher_T{fmt(temperature)}" if arch else f"teacher_T{fmt(temperature)}"
    return {"teacher": f"{R}/models/{teacher}/seed{wildcards.seed}/model.pt"}


def attacks_of(model):
    """The attack families run on ``model``: fgsm_T on distilled students only, transfer_fgsm
    on every model but its source, those of attacks.baseline_only on the baseline only."""
    attacks = config["attacks"]
    strategy = parse_model(model)[0]
    return [
        a
        for a in attacks["families"]
        if not (a == "fgsm_T" and strategy != "distill_student")
        and not (a == "transfer_fgsm" and model == attacks["transfer_fgsm"]["source"])
        and not (a in attacks["baseline_only"] and model != "baseline")
    ]


def attack_results():
    return [
        f"{R}/attacks/{m}/seed{s}/{a}.csv" for m in MODELS for s in seeds_of(m) for a in attacks_of(m)
    ]


def attack_settings(wildcards):
    """Only the settings the attack family ``wildcards.attack`` depends on."""
    cfg = config["attacks"]
    settings = {
        key: cfg[key]
        for key in ("loss", "gamma", "mask", "batch", "eval_batch", "examples", wildcards.attack)
    }
    if wildcards.attack in ("ifgsm", "tifgsm"):  # the iterate Table 1 and Fig. 1 report
        settings["table1_iteration"] = config["statistics"]["table1_iteration"]
    if wildcards.attack == "random_sign" and cfg["random_sign"]["epsilons"] is None:
        settings["random_sign"] = {"epsilons": cfg["fgsm"]["epsilons"]}  # FGSM's sweep
    return settings


def worst_case_iterations():
    """The iterate of each iterative attack the worst-case Dice takes: Table 1's for i-FGSM and
    ti-FGSM (the others record their last only)."""
    return {a: config["statistics"]["table1_iteration"] for a in ("ifgsm", "tifgsm")}


ADVERSARIAL_FAMILIES = {"fgsm", "ifgsm", "tifgsm", "pgd", "segpgd", "fgsm_T", "transfer_fgsm",
                        "pgd_large"}  # fmt: skip


def audit_targets():
    """The audit table, and the worst-case table and figures when an adversarial family runs."""
    targets = [f"{R}/tables/audit.md"]
    if ADVERSARIAL_FAMILIES & set(config["attacks"]["families"]):
        targets += [f"{R}/tables/worst_case.md"]
        targets += expand(f"{R}/figures/worst_case/{{model}}.png", model=MODELS)
    return targets


def transfer_source(wildcards):
    """The model transfer FGSM is crafted on: the source of the same seed (its first seed for
    an external model)."""
    if wildcards.attack != "transfer_fgsm":
        return {}
    source = config["attacks"]["transfer_fgsm"]["source"]
    seeds = seeds_of(source)
    seed = int(wildcards.seed) if int(wildcards.seed) in seeds else seeds[0]
    return {"source": f"{R}/models/{source}/seed{seed}/model.pt"}


def table1_rows():
    """(attack, ε, iteration or None for the last) rows of Table 1 for the configured attacks."""
    stats, attacks = config["statistics"], config["attacks"]
    families = attacks["families"]
    iteration = stats["table1_iteration"]
    iterative = [a for a in ("ifgsm", "tifgsm") if a in families]
    for a in iterative:
        if iteration > attacks[a]["steps"]:
            raise ValueError(
                f"statistics.table1_iteration = {iteration} exceeds attacks.{a}.steps = "
                f"{attacks[a]['steps']}: that iterate is never computed"
            )
    rows = [["fgsm", stats["table1_fgsm_eps"], 1]] if "fgsm" in families else []
    rows += [[a, attacks[a]["eps"], iteration] for a in iterative]
    rows += [[a, attacks[a]["eps"], None] for a in ("pgd", "segpgd") if a in families]
    return rows


def replicate_conditions():
    """(attack, ε) settings of the exploratory defence comparisons (tables/replicates.md):
    Table 2's FGSM budgets, then PGD and SegPGD at their budgets when configured."""
    attacks = config["attacks"]
    conditions = [["fgsm", e] for e in config["statistics"]["table2_eps"]]
    conditions += [[a, attacks[a]["eps"]] for a in ("pgd", "segpgd") if a in attacks["families"]]
    return conditions


def defence_comparisons():
    """[defence, reference] pairs of the primary and exploratory analyses: every trained model
    but a baseline against the baseline of its architecture. External models are left out:
    they are not training procedures and have one replicate (Tables 1–2 compare them)."""
    pairs = []
    for model in TRAINED:
        arch, name = arch_of(model)
        if name != "baseline":
            pairs.append([model, f"{arch}.baseline" if arch else "baseline"])
    return pairs


def primary_settings():
    """statistics.primary, checked against what runs: its attack must attack every defence
    white-box at its ε (stops the workflow before any job otherwise)."""
    primary, attacks = config["statistics"]["primary"], config["attacks"]
    attack, eps = primary["attack"], float(primary["eps"])
    where = f"statistics.primary.attack = {attack}"
    if attack not in attacks["families"]:
        raise ValueError(f"{where} is not in attacks.families: the primary analysis never runs")
    if attack in attacks["baseline_only"]:
        raise ValueError(f"{where} is in attacks.baseline_only: no defence is attacked with it")
    budgets = attacks["fgsm"]["epsilons"] if attack == "fgsm" else [attacks[attack]["eps"]]
    if not any(abs(eps - float(b)) < 1e-9 for b in budgets):
        raise ValueError(
            f"statistics.primary.eps = {eps:g} is not a budget {attack} runs at: {budgets}"
        )
    return primary


PRIMARY = primary_settings()


def _figures():
    """The figures the configured models and attacks can fill."""
    families = set(config["attacks"]["families"])
    train = config["training"]
    wanted = {
        "fig1": {"fgsm", "ifgsm", "tifgsm"} <= families,
        "fig2": {"ifgsm", "tifgsm"} <= families,
        "supp_fig2": {"ifgsm", "tifgsm"} <= families,
        "fig3": "fgsm" in families and bool(train["distillation"]["temperatures"]),
        "fig4": "fgsm" in families and bool(train["adversarial"]["epsilons"]),
        "fig5": "fgsm" in families,
        "robustness": bool(families & {"pgd", "segpgd", "fgsm_T", "transfer_fgsm"}),
        "realistic": "realistic" in families,
    }
    for key in ("fig1_eps", "fig5_eps"):
        eps = config["figures"][key]
        if eps not in config["attacks"]["examples"]["eps"] or eps not in config["attacks"]["fgsm"]["epsilons"]:
            raise ValueError(
                f"figures.{key} = {eps} must be listed in attacks.fgsm.epsilons and "
                "attacks.examples.eps (the figure shows a saved example at that ε)"
            )
    if config["attacks"]["examples"]["n_subjects"] < 1:
        wanted["fig1"] = wanted["fig5"] = False
    return [name for name, ok in wanted.items() if ok]


FIGURES = _figures()


def figure_inputs(wildcards):
    """Example volumes and predictions that the image figures (1 and 5) show: of the first
    seed's replicates."""
    if wildcards.figure not in ("fig1", "fig5"):
        return {}
    models = ["baseline"] if wildcards.figure == "fig1" else MODELS
    attacks = ("fgsm", "ifgsm", "tifgsm") if wildcards.figure == "fig1" else ("fgsm",)
    return {
        "split": f"{R}/split.csv",
        "examples": [
            f"{R}/attacks/{m}/seed{seeds_of(m)[0]}/{a}_examples" for m in models for a in attacks
        ],
        "predictions": [f"{R}/evaluation/{m}/seed{seeds_of(m)[0]}/predictions" for m in models],
    }


def remove_finished_checkpoints():
    """Delete the checkpoints of models that exist, and folders left empty. Kept until the
    workflow succeeds, the final one lets a job killed after saving its model (a time limit hit
    at the very end, which makes Snakemake remove the model) be retried without training again."""
    for ckpt in Path(R, "checkpoints").glob("*/*.ckpt"):
        if Path(R, "models", ckpt.parent.name, ckpt.stem, "model.pt").exists():
            ckpt.unlink()
    for folder in Path(R, "checkpoints").glob("*/"):
        if not any(folder.iterdir()):
            folder.rmdir()


def all_targets():
    return [
        f"{R}/split.csv",
        *model_dirs(f"{R}/evaluation/{MODEL_DIR}/clean.csv"),
        f"{R}/tables/table1.md",
        f"{R}/tables/table2.md",
        f"{R}/tables/replicates.md",
        f"{R}/summary.md",
        *expand(f"{R}/figures/{{figure}}.png", figure=FIGURES),
        *audit_targets(),
    ]
