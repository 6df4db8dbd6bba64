"""The serving hash agrees with scikit-learn's, which training's HashingVectorizer uses."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

from classifiers.hashing import TOKEN_PATTERN, TermHasher, hash_index, word_ngrams

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
