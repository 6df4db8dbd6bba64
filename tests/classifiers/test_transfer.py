"""Transfer aids: the shared-word mask, the prompt-length prior and source intercepts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from classifiers.conversation import STRUCTURAL_FEATURES
from classifiers.outcomes import LabelledPrompt
from classifiers.training import TrainConfig, TrainingError, fit_tier_model
from classifiers.transfer import (
    SOURCE_COLUMN_SCALE,
    blend_length_prior,
    fit_with_source_intercepts,
    mask_columns,
    shared_word_mask,
)
from tests.classifiers.conftest import assert_scorer_matches_model, make_records

N_FEATURES = 2**12
LENGTH_COLUMN = N_FEATURES + STRUCTURAL_FEATURES.index("log_last_chars")


def _two_source_records() -> list[LabelledPrompt]:
    """Return rows from two sources whose wording differs except for shared words."""
    records = make_records(60)
    for index, record in enumerate(records):
        record.source = "alpha/x" if index % 3 else "beta/y"
    return records


def test_mask_keeps_columns_in_enough_groups() -> None:
    word = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [0.0, 3.0, 0.0]]))
    groups = np.array(["a", "b", "b"])
    np.testing.assert_array_equal(shared_word_mask(word, groups, 2), [False, False, True])
    np.testing.assert_array_equal(shared_word_mask(word, groups, 1), [True, True, True])
    np.testing.assert_array_equal(shared_word_mask(word, groups, 3), [False, False, False])


def test_mask_columns_leaves_trailing_columns() -> None:
    rows = sp.csr_matrix(np.array([[1.0, 2.0, 5.0]]))
    masked = mask_columns(rows, np.array([False, True]))
    np.testing.assert_array_equal(masked.toarray(), [[0.0, 2.0, 5.0]])


def test_min_sources_zeroes_single_source_words() -> None:
    records = _two_source_records()
    config = TrainConfig(n_features=N_FEATURES, min_sources=2)
    model = fit_tier_model(records, ("edge", "frontier"), config)
    word = model.featurizer.transform([r.messages for r in records])[:, :N_FEATURES]
    groups = np.array([r.source.split("/")[0] for r in records])
    shared = shared_word_mask(word, groups, 2)
    coef = model.models["edge"].coef_[0, :N_FEATURES]
    assert shared.any() and (~shared).any()
    assert np.all(coef[~shared] == 0.0)
    assert np.any(coef[shared] != 0.0)


def test_min_sources_matches_fast_scorer() -> None:
    records = _two_source_records()
    model = fit_tier_model(records, ("edge", "frontier"),
                           TrainConfig(n_features=N_FEATURES, min_sources=2, length_prior=0.4))
    assert_scorer_matches_model(model, [r.messages for r in records], "transfer-1")


def test_length_prior_one_is_length_only() -> None:
    records = make_records(60)
    model = fit_tier_model(records, ("edge", "frontier"),
                           TrainConfig(n_features=N_FEATURES, length_prior=1.0))
    coef = model.models["edge"].coef_[0]
    nonzero = np.flatnonzero(coef)
    np.testing.assert_array_equal(nonzero, [LENGTH_COLUMN])


def test_length_prior_mixes_logits() -> None:
    records = make_records(60)
    config = TrainConfig(n_features=N_FEATURES)
    plain = fit_tier_model(records, ("edge", "frontier"), config)
    rows = plain.featurizer.transform([r.messages for r in records])
    labels = np.array([float(r.quality["edge"] >= 0.5) for r in records])
    head = plain.models["edge"]
    before = head.decision_function(rows)
    length_only = blend_length_prior(_copy(head), rows, labels, np.ones(len(records)),
                                     LENGTH_COLUMN, 1.0).decision_function(rows)
    mixed = blend_length_prior(head, rows, labels, np.ones(len(records)), LENGTH_COLUMN, 0.25)
    np.testing.assert_allclose(mixed.decision_function(rows), 0.75 * before + 0.25 * length_only)


def test_source_intercepts_match_fast_scorer() -> None:
    records = _two_source_records()
    config = TrainConfig(n_features=N_FEATURES, source_power=0.5, source_intercepts=True,
                         min_sources=2, length_prior=0.3)
    model = fit_tier_model(records, ("edge", "frontier"), config)
    assert model.models["edge"].coef_.shape == (1, N_FEATURES + len(STRUCTURAL_FEATURES))
    assert_scorer_matches_model(model, [r.messages for r in records], "transfer-2")


def test_source_intercepts_average_group_logits() -> None:
    records = _two_source_records()
    plain = fit_tier_model(records, ("edge", "frontier"), TrainConfig(n_features=N_FEATURES))
    rows = plain.featurizer.transform([r.messages for r in records])
    labels = np.array([float(r.quality["edge"] >= 0.5) for r in records])
    groups = np.array([r.source.split("/")[0] for r in records])
    weights = np.where(groups == "alpha", 1.0, 3.0)

    folded = fit_with_source_intercepts(LogisticRegression(solver="liblinear", random_state=0),
                                        rows, labels, weights, groups)

    # The same fit with the indicator columns kept, then every row scored as each group.
    full = LogisticRegression(solver="liblinear", random_state=0)
    full.fit(_with_indicators(rows, groups == "alpha", groups == "beta"), labels,
             sample_weight=weights)
    everyone = np.ones(len(records), dtype=bool)
    nobody = ~everyone
    as_alpha = full.decision_function(_with_indicators(rows, everyone, nobody))
    as_beta = full.decision_function(_with_indicators(rows, nobody, everyone))
    alpha_weight = weights[groups == "alpha"].sum()
    beta_weight = weights[groups == "beta"].sum()
    expected = (alpha_weight * as_alpha + beta_weight * as_beta) / (alpha_weight + beta_weight)

    np.testing.assert_allclose(folded.decision_function(rows), expected, rtol=0, atol=1e-9)
    assert folded.n_features_in_ == rows.shape[1]
    assert set(folded.source_offsets_) == {"alpha", "beta"}


def test_source_intercepts_record_group_offsets() -> None:
    records = _two_source_records()
    for record in records:
        # Every beta row fails the edge tier, whatever its wording.
        if record.source == "beta/y":
            record.quality["edge"] = 0.0
    model = fit_tier_model(records, ("edge", "frontier"),
                           TrainConfig(n_features=N_FEATURES, source_intercepts=True))
    offsets = model.models["edge"].source_offsets_
    assert offsets["beta"] < offsets["alpha"]


def test_source_intercepts_reject_sgd() -> None:
    config = TrainConfig(n_features=N_FEATURES, source_intercepts=True, solver="sgd")
    with pytest.raises(TrainingError, match="liblinear"):
        fit_tier_model(_two_source_records(), ("edge", "frontier"), config)


def test_source_intercepts_need_groups() -> None:
    from classifiers.training import fit_heads, label_matrix

    records = make_records(20)
    model = fit_tier_model(records, ("edge", "frontier"), TrainConfig(n_features=N_FEATURES))
    rows = model.featurizer.transform([r.messages for r in records])
    labels = label_matrix(records, ("edge", "frontier"))
    config = TrainConfig(n_features=N_FEATURES, source_intercepts=True)
    with pytest.raises(TrainingError, match="source group"):
        fit_heads(rows, labels, ("edge", "frontier"), config, seed=0)


@pytest.mark.parametrize(("field", "value"), [("length_prior", -0.1), ("length_prior", 1.5),
                                              ("min_sources", 0)])
def test_config_rejects_out_of_range(field: str, value: Any) -> None:
    with pytest.raises(TrainingError, match=field.replace("_", " ")):
        TrainConfig(**{field: value})


def test_fit_heads_needs_groups_for_min_sources() -> None:
    from classifiers.training import fit_heads, label_matrix

    records = make_records(20)
    model = fit_tier_model(records, ("edge", "frontier"), TrainConfig(n_features=N_FEATURES))
    rows = model.featurizer.transform([r.messages for r in records])
    labels = label_matrix(records, ("edge", "frontier"))
    config = TrainConfig(n_features=N_FEATURES, min_sources=2)
    with pytest.raises(TrainingError, match="source group"):
        fit_heads(rows, labels, ("edge", "frontier"), config, seed=0)


def _with_indicators(rows: sp.csr_matrix, alpha: np.ndarray, beta: np.ndarray) -> sp.csr_matrix:
    """Append the alpha and beta indicator columns, scaled as the training code scales them."""
    indicators = np.column_stack([alpha, beta]).astype(float) * SOURCE_COLUMN_SCALE
    return sp.hstack([rows, sp.csr_matrix(indicators)], format="csr")


def _copy(head: Any) -> Any:
    import copy

    return copy.deepcopy(head)
