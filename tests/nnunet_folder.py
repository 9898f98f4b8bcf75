"""Make a real nnU-Net v2 result folder with nnU-Net's own code (run as a script, so that
nnU-Net reads its nnUNet_raw / nnUNet_preprocessed / nnUNet_results paths at import).

    python nnunet_folder.py <spec.json>

spec: {"dataset_id", "name", "channel_names", "labels", "regions_class_order" (or null),
"n_cases", "folds", "iterations"}; the raw cases must already be in
$nnUNet_raw/Dataset<id>_<name>/imagesTr and labelsTr (NIfTI). nnU-Net's fingerprint
extractor, experiment planner and preprocessor run as `nnUNetv2_plan_and_preprocess -c
3d_fullres` does; then nnU-Net's own trainer trains each fold for ``iterations`` steps (one
epoch; a subclass that only shortens the epoch) and writes fold_<k>/checkpoint_final.pth.
Prints the result folder.
"""

import json
import os
import sys


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    import torch
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.set_num_threads(1)
    os.environ["nnUNet_n_proc_DA"] = "1"
    dataset = f"Dataset{spec['dataset_id']:03d}_{spec['name']}"
    generate_dataset_json(
        os.path.join(nnUNet_raw, dataset), spec["channel_names"], spec["labels"],
        spec["n_cases"], ".nii.gz", regions_class_order=spec["regions_class_order"],
    )  # fmt: skip
    extract_fingerprints([spec["dataset_id"]], num_processes=1, check_dataset_integrity=True)
    plan_experiments([spec["dataset_id"]])
    preprocess([spec["dataset_id"]], configurations=("3d_fullres",), num_processes=(1,))

    class nnUNetTrainerShort(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
        def __init__(self, plans, configuration, fold, dataset_json, device):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = spec["iterations"]
            self.num_val_iterations_per_epoch = 1
            self.num_epochs = 1

    os.environ["nnUNet_n_proc_DA"] = "0"  # augment in this process (planning needs >= 1)
    preprocessed = os.path.join(nnUNet_preprocessed, dataset)
    plans = json.loads(open(os.path.join(preprocessed, "nnUNetPlans.json")).read())
    dataset_json = json.loads(open(os.path.join(preprocessed, "dataset.json")).read())
    for fold in spec["folds"]:
        trainer = nnUNetTrainerShort(
            plans=plans, configuration="3d_fullres", fold=fold, dataset_json=dataset_json,
            device=torch.device("cpu"),
        )  # fmt: skip
        trainer.run_training()
    print(os.path.dirname(trainer.output_folder))


if __name__ == "__main__":
    main(sys.argv[1])
