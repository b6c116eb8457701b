"""core.metrics: exactly the BirdCLEF 2023 padded cmAP and sklearn's scores."""
import numpy as np
import pandas as pd
import pytest
import sklearn.metrics

from core.metrics import accuracy, all_metrics, cmap_present, mean_recall, padded_cmap


def kaggle_padded_cmap(solution, submission, padding_factor=5):
    """The competition's reference implementation, verbatim."""
    solution = solution.drop(["row_id"], axis=1, errors="ignore")
    submission = submission.drop(["row_id"], axis=1, errors="ignore")
    new_rows = []
    for i in range(padding_factor):
        new_rows.append([1 for i in range(len(solution.columns))])
    new_rows = pd.DataFrame(new_rows)
    new_rows.columns = solution.columns
    padded_solution = pd.concat([solution, new_rows]).reset_index(drop=True).copy()
    padded_submission = pd.concat([submission, new_rows]).reset_index(drop=True).copy()
    return sklearn.metrics.average_precision_score(padded_solution.values, padded_submission.values, average="macro")


@pytest.fixture
def preds():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 60)
    labels[labels == 6] = 0  # class 6 absent from the truth
    logits = rng.normal(size=(60, 7)) + 2.0 * np.eye(7)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, labels


def test_padded_cmap_equals_the_competition_code(preds):
    probs, labels = preds
    cols = [f"c{k}" for k in range(7)]
    ref = kaggle_padded_cmap(pd.DataFrame(np.eye(7)[labels], columns=cols), pd.DataFrame(probs, columns=cols))
    assert padded_cmap(probs, labels) == pytest.approx(ref, abs=1e-12)
    assert 0.3 < ref < 1.0


def test_absent_classes_score_one_under_padding_which_cmap_present_excludes(preds):
    probs, labels = preds
    present = np.unique(labels)
    per_class = sklearn.metrics.average_precision_score(np.eye(7)[labels][:, present], probs[:, present], average=None)
    assert cmap_present(probs, labels) == pytest.approx(per_class.mean(), abs=1e-12)
    assert padded_cmap(probs, labels) > cmap_present(probs, labels)


def test_accuracy_and_macro_recall_against_sklearn(preds):
    probs, labels = preds
    assert accuracy(probs, labels) == pytest.approx(sklearn.metrics.accuracy_score(labels, probs.argmax(1)))
    assert mean_recall(probs, labels) == pytest.approx(
        sklearn.metrics.recall_score(labels, probs.argmax(1), average="macro", zero_division=0))


def test_perfect_predictions_and_shapes():
    labels = np.array([0, 1, 2, 1])
    probs = np.eye(3)[labels]
    m = all_metrics(probs, labels)
    assert m == {"cmap": 1.0, "cmap_present": 1.0, "accuracy": 1.0, "mean_recall": 1.0}
    with pytest.raises(ValueError, match="expected probs"):
        padded_cmap(probs[:2], labels)


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_equals_sklearns_with_ties_and_one_positive_columns(seed):
    from core.metrics import average_precision

    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 300)), int(rng.integers(1, 12))
    truth = (rng.random((n, c)) < rng.random(c)).astype(float)
    truth[rng.integers(0, n, c), np.arange(c)] = 1.0  # a positive in every column
    scores = np.round(rng.random((n, c)), int(rng.integers(1, 4)))  # rounded: runs of equal scores
    scores[:, 0] = 0.5  # one column all ties
    want = sklearn.metrics.average_precision_score(truth, scores, average=None)
    assert average_precision(truth, scores) == pytest.approx(np.atleast_1d(want), abs=1e-12)


def test_a_column_without_positives_is_scored_as_sklearn_scores_it():
    from core.metrics import average_precision

    truth, scores = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), np.array([[0.9, 0.2], [0.5, 0.4], [0.1, 0.3]])
    with pytest.warns(UserWarning):  # sklearn's: no positive class found
        want = sklearn.metrics.average_precision_score(truth, scores, average=None)
    with pytest.warns(UserWarning):
        assert average_precision(truth, scores) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_macro_recall_counts_classes_only_predicted_as_sklearn_does(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 40)
    probs = rng.random((40, 9))  # predictions reach classes 5-8, absent from the labels
    assert mean_recall(probs, labels) == pytest.approx(
        sklearn.metrics.recall_score(labels, probs.argmax(1), average="macro", zero_division=0), abs=1e-12)


def test_a_trials_worker_does_not_import_sklearn():
    import subprocess
    import sys

    code = "import sys, search.trainable; print('sklearn' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stdout + r.stderr
