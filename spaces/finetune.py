"""Fine-tuning from a bird-pretrained checkpoint, as the notebook does (lr 3e-5, 30 epochs)."""
from spaces.base import Space

# The notebook's own values: the first trial, so the search starts from what a user already has.
NOTEBOOK = dict(lr=3e-5, weight_decay=3e-4, drop_rate=0.3, drop_path_rate=0.2, label_smoothing=0.25,
                class_cap=500, class_floor=50)


def suggest_regularisation(trial) -> None:
    """The knobs fine-tuning and training from scratch share."""
    trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
    trial.suggest_float("drop_rate", 0.0, 0.5)
    trial.suggest_float("drop_path_rate", 0.0, 0.3)
    trial.suggest_float("label_smoothing", 0.0, 0.3)
    trial.suggest_int("class_cap", 100, 1000, step=50)  # inclusive bounds, as Optuna's suggest_int
    trial.suggest_int("class_floor", 10, 100, step=10)


def define(trial) -> None:
    trial.suggest_float("lr", 1e-5, 3e-4, log=True)
    suggest_regularisation(trial)


SPACE = Space(
    name="finetune",
    description="fine-tune from init_checkpoint: lr, weight decay, dropout, drop path, smoothing, class caps",
    define=define,
    base=dict(lr_schedule="none"),
    epochs=30, grace_period=2, reduction_factor=3, num_samples=32,
    points=[NOTEBOOK],
    demo=dict(epochs=8, grace_period=1, reduction_factor=4, num_samples=16),
    init_from_demo_base=True,
    reference="notebook",
)
