"""Progress reports of evaluation and training runs."""

from __future__ import annotations

from classifiers.evaluation import evaluate_records
from classifiers.training import TrainConfig
from tests.classifiers.conftest import make_records


class RecordingProgress:
    """A progress callback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, int | None]] = []

    def __call__(self, text: str, *, done: int | None = None, total: int | None = None) -> None:
        self.calls.append((text, done, total))


def test_evaluation_reports_each_fold() -> None:
    progress = RecordingProgress()

    evaluate_records(make_records(), ("edge", "frontier"), folds=3,
                     config=TrainConfig(n_features=2**10), progress=progress)

    counted = [(done, total) for _, done, total in progress.calls if total is not None]
    assert counted == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert progress.calls[1][0].startswith("fold 1: training on ")
