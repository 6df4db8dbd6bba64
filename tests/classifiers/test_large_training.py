"""The memory-lean feature assembly and the SGD solver used for large training sets."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression, SGDClassifier

from classifiers import training
from classifiers.config import SGD_MIN_ROWS, TrainConfig, TrainingError
from classifiers.training import (
    ConversationFeaturizer,
    RowBuilder,
    append_dense_columns,
    fit_tier_model,
)
from tests.classifiers.conftest import assert_scorer_matches_model, make_records


def _conversations(count: int) -> list[list[dict[str, str]]]:
    conversations = [[{"role": "user", "content": f"question {i}: " + "why " * (i % 17)}]
                     for i in range(count)]
    conversations.append([{"role": "user", "content": ""}])
    conversations.append([{"role": "user", "content": "solve x^2 = 4"},
                          {"role": "assistant", "content": "x = 2 or x = -2"},
                          {"role": "user", "content": "ok, and x^3 = 8?"}])
    return conversations


def test_row_builder_matches_vstack() -> None:
    blocks = [sp.random(n, 50, density=0.1, format="csr", random_state=n) for n in (3, 0, 7, 1)]
    builder = RowBuilder(50)
    for block in blocks:
        builder.append(block)
    built = builder.build()

    built.check_format(full_check=True)
    np.testing.assert_array_equal(built.toarray(), sp.vstack(blocks).toarray())


def test_row_builder_rejects_wrong_width() -> None:
    builder = RowBuilder(50)
    with pytest.raises(ValueError, match="expected 50"):
        builder.append(sp.csr_matrix((2, 49)))


def test_append_dense_columns_matches_hstack() -> None:
    sparse = sp.random(9, 40, density=0.2, format="csr", random_state=0)
    dense = np.random.default_rng(0).normal(size=(9, 4))
    dense[2] = 0.0

    appended = append_dense_columns(sparse, dense)

    appended.check_format(full_check=True)
    np.testing.assert_array_equal(appended.toarray(), sp.hstack([sparse, dense]).toarray())


def test_fit_assemble_equals_raw_then_assemble(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks, so that several chunks and a partly filled last one are exercised.
    monkeypatch.setattr(training, "FEATURE_CHUNK_ROWS", 7)
    conversations = _conversations(40)
    reference = ConversationFeaturizer(n_features=2**12)
    raw = reference.raw(conversations)
    reference.fit_raw(raw)
    expected = reference.assemble(raw)

    lean = ConversationFeaturizer(n_features=2**12)
    rows = lean.fit_assemble(conversations)

    np.testing.assert_array_equal(lean.struct_mean_, reference.struct_mean_)
    np.testing.assert_array_equal(lean.struct_scale_, reference.struct_scale_)
    np.testing.assert_allclose(rows.toarray(), expected.toarray(), rtol=0, atol=0)


def test_sgd_heads_export_matching_scorer() -> None:
    records = make_records(80)
    model = fit_tier_model(records, ("edge", "frontier"), TrainConfig(n_features=2**12, solver="sgd"))
    assert all(isinstance(head, SGDClassifier) for head in model.models.values())

    assert_scorer_matches_model(model, [r.messages for r in records])


def test_sgd_learns_the_easy_split() -> None:
    records = make_records(80)
    model = fit_tier_model(records, ("edge", "frontier"), TrainConfig(n_features=2**12, solver="sgd"))
    edge = model.predict_proba([r.messages for r in records])[:, 0]
    hard = np.array([r.quality["edge"] == 0.0 for r in records])
    assert edge[~hard].min() > edge[hard].max()


def test_auto_solver_switches_above_row_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    records = make_records(80)
    monkeypatch.setattr(training, "SGD_MIN_ROWS", 79)
    large = fit_tier_model(records, ("edge",), TrainConfig(n_features=2**12))
    monkeypatch.setattr(training, "SGD_MIN_ROWS", 80)
    small = fit_tier_model(records, ("edge",), TrainConfig(n_features=2**12))

    assert isinstance(large.models["edge"], SGDClassifier)
    assert isinstance(small.models["edge"], LogisticRegression)
    assert SGD_MIN_ROWS >= 100_000


def test_sgd_ignores_unlabelled_rows() -> None:
    records = make_records(80)
    for record in records[::3]:
        del record.quality["edge"]
    model = fit_tier_model(records, ("edge",), TrainConfig(n_features=2**12, solver="sgd"))
    labelled = [r for r in records if "edge" in r.quality]
    edge = model.predict_proba([r.messages for r in labelled])[:, 0]
    hard = np.array([r.quality["edge"] == 0.0 for r in labelled])
    assert edge[~hard].min() > edge[hard].max()


def test_unknown_solver_is_rejected() -> None:
    with pytest.raises(TrainingError, match="solver must be one of"):
        TrainConfig(solver="newton")
