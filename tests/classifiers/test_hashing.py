"""The serving hash agrees with scikit-learn's, which training's HashingVectorizer uses."""

from __future__ import annotations

import mmh3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

from classifiers.hashing import TOKEN_PATTERN, TermHasher, _column, hash_index, word_ngrams

WRITTEN = ["", "a", "hello world", "東京の天気は", "x² + y² = z²", "😀 emoji", "\x00nul", "tab\tand\nnewline"]


def sklearn_column(term: str, n_features: int) -> int:
    vectorizer = HashingVectorizer(
        n_features=n_features, analyzer=lambda _: [term], alternate_sign=False, norm=None
    )
    return int(vectorizer.transform([""]).indices[0])


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_hash_matches_sklearn_murmurhash(term: str) -> None:
    assert hash_index(term, 2**31 - 1) == abs(murmurhash3_32(term, seed=0)) % (2**31 - 1)


def test_columns_match_hashing_vectorizer_on_written_terms() -> None:
    for term in WRITTEN:
        for n_features in (2**10, 2**18):
            assert hash_index(term, n_features) == sklearn_column(term, n_features), term


def test_term_hasher_matches_hashing_vectorizer_on_sentences() -> None:
    text = "Prove that the square root of 2 is irrational; 证明 √2 不是有理数. Then explain why."
    vectorizer = HashingVectorizer(
        n_features=2**16, token_pattern=TOKEN_PATTERN, ngram_range=(1, 2),
        alternate_sign=False, norm=None,
    )
    expected = sorted(set(vectorizer.transform([text]).indices.tolist()))
    hasher = TermHasher(2**16, 2)
    actual = sorted({hash_index(term, 2**16) for term in word_ngrams(text, 2)})
    assert hasher.n_features == 2**16
    assert actual == expected


# ASCII and non-ASCII text take different tokenizer paths, and repeated words check the counts.
COUNTED = [
    "",
    "a b c",
    "The cat saw the cat and the other cat.",
    "snake_case, CamelCase and 12,500.75 dollars; x2 y3 z4",
    "Prove that the square root of 2 is irrational; 证明 √2 不是有理数. Then explain why.",
    "naïve café — résumé, ÉCOLE and Straße",
    "😀 emoji 😀 emoji text",
    "word " * 300,
    "I a_b _ __ A1 1 9x\tTAB\nNEW\x0bvt\x0cff\rCR\x00nul MiXeD_Case!!x y-z a.b",
]


@pytest.mark.parametrize("n_features", [1, 1000, 2**10, 2**18, 2**31 - 1])
@pytest.mark.parametrize("ngram_max", [1, 2, 3])
def test_columns_match_hashing_vectorizer_counts(n_features: int, ngram_max: int) -> None:
    vectorizer = HashingVectorizer(
        n_features=n_features, token_pattern=TOKEN_PATTERN, ngram_range=(1, ngram_max),
        alternate_sign=False, norm=None,
    )
    hasher = TermHasher(n_features, ngram_max)
    for text in COUNTED:
        expected = vectorizer.transform([text])
        columns = hasher.columns(text)
        assert columns.dtype == np.int64, text
        values, counts = np.unique(columns, return_counts=True)
        assert values.tolist() == expected.indices.tolist(), text
        assert counts.tolist() == expected.data.tolist(), text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_columns_match_hashing_vectorizer(text: str) -> None:
    vectorizer = HashingVectorizer(
        n_features=2**10, token_pattern=TOKEN_PATTERN, ngram_range=(1, 2),
        alternate_sign=False, norm=None,
    )
    expected = vectorizer.transform([text])
    values, counts = np.unique(TermHasher(2**10, 2).columns(text), return_counts=True)
    assert values.tolist() == expected.indices.tolist()
    assert counts.tolist() == expected.data.tolist()


@pytest.mark.parametrize("n_features", [1, 3, 1000, 2**10, 2**17, 2**31 - 1, 2**31, 2**31 + 5, 2**40])
def test_columns_keep_sklearn_int32_min_case(monkeypatch: pytest.MonkeyPatch, n_features: int) -> None:
    # No short term is known to hash to INT32_MIN, so the hash of "alpha" is replaced.
    real_hash = mmh3.hash

    def hash_with_int32_min(term: str | bytes, seed: int = 0) -> int:
        return -(2**31) if term in ("alpha", b"alpha") else real_hash(term, seed)

    monkeypatch.setattr(mmh3, "hash", hash_with_int32_min)
    hasher = TermHasher(n_features, 1)
    expected_alpha = (2147483647 - (n_features - 1)) % n_features
    assert _column(-(2**31), n_features) == expected_alpha
    for text in ("alpha beta", "alpha βeta"):
        columns = hasher.columns(text).tolist()
        assert columns[0] == expected_alpha, text
        assert columns[1] == hash_index(text.split()[1], n_features), text


def test_word_ngrams_keep_vectorizer_order() -> None:
    assert word_ngrams("One two, THREE", 3) == [
        "one", "two", "three", "one two", "two three", "one two three",
    ]
    assert word_ngrams("solo", 3) == ["solo"]
    assert word_ngrams("a b", 2) == []
