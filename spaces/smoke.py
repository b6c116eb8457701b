"""A seconds-sized space on the tiny demo data: for tests, CI and checking a set-up."""
from spaces.base import Space


def define(trial) -> None:
    trial.suggest_float("lr", 1e-3, 3e-2, log=True)
    trial.suggest_float("drop_rate", 0.0, 0.5)


SPACE = Space(
    name="smoke",
    description="tiny demo data, 2 knobs, 3 epochs: seconds per trial",
    define=define,
    base=dict(batch_size=16, mixup_p=0.5),
    epochs=3, grace_period=1, reduction_factor=2, num_samples=6,
    points=[dict(lr=1e-2, drop_rate=0.3)],
    demo_size="tiny",
)
