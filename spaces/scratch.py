"""Training from ImageNet (or random) weights: a higher lr range, plus mixup probability."""
from spaces.base import Space
from spaces.finetune import suggest_regularisation


def define(trial) -> None:
    trial.suggest_float("lr", 1e-4, 3e-3, log=True)
    suggest_regularisation(trial)
    trial.suggest_float("mixup_p", 0.0, 1.0)


SPACE = Space(
    name="scratch",
    description="train from ImageNet or random weights: higher lr range, the finetune knobs and mixup_p",
    define=define,
    base=dict(lr_schedule="cosine", warmup_epochs=1.0),
    epochs=30, grace_period=3, reduction_factor=3, num_samples=32,
    points=[dict(lr=3e-4, weight_decay=3e-4, drop_rate=0.3, drop_path_rate=0.2, label_smoothing=0.25,
                 class_cap=500, class_floor=50, mixup_p=1.0)],
    demo=dict(epochs=8, grace_period=1, reduction_factor=3, num_samples=16, base=dict(lr_schedule="cosine", warmup_epochs=0.5)),
)
