"""Word n-gram hashing that reproduces scikit-learn's HashingVectorizer in pure Python.

Calling scikit-learn per request adds input validation and sparse-matrix building to
every call (about 40 us for ``HashingVectorizer.transform`` of one short prompt on a
2-core development machine, and more for a whole pipeline), so the fast scorer
tokenizes and hashes itself.  ``TermHasher`` matches
``HashingVectorizer(analyzer="word", lowercase=True, token_pattern=TOKEN_PATTERN,
ngram_range=(1, ngram_max), alternate_sign=False, norm=None)`` (checked with
scikit-learn 1.9) term for term; a test checks the two agree on real prompts.

The hash is ``mmh3.hash``, which returns the same signed 32-bit MurmurHash3 as
``sklearn.utils.murmurhash3_32(term, seed=0)`` for every string (both hash its UTF-8
bytes).  Importing scikit-learn here would load scikit-learn and SciPy into every gateway
process, about 70 MiB of memory that serving never uses.
"""

from __future__ import annotations

import re

import mmh3

# Runs of two or more word characters.  findall() returns the same tokens as
# scikit-learn's default r"(?u)\b\w\w+\b" (a greedy run always ends at a boundary), but
# without the boundary checks the regex runs about twice as fast.
TOKEN_PATTERN = r"\w\w+"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_INT32_MIN = -(2**31)
# Bounded memo of term -> column.  Frequent words repeat across prompts, and a dict hit
# costs about a third of a murmurhash call.  Past the bound new terms are hashed, not stored.
DEFAULT_CACHE_SIZE = 200_000


def hash_index(term: str, n_features: int) -> int:
    """Return the HashingVectorizer column of ``term`` for ``n_features`` columns."""
    h = mmh3.hash(term, 0)
    if h == _INT32_MIN:
        # scikit-learn's special case: abs(INT32_MIN) overflows in int32.
        return (2147483647 - (n_features - 1)) % n_features
    return abs(h) % n_features


def word_ngrams(text: str, ngram_max: int) -> list[str]:
    """Return the word n-grams of ``text`` in HashingVectorizer order (unigrams first)."""
    tokens = _TOKEN_RE.findall(text.lower())
    grams = list(tokens)
    for n in range(2, min(ngram_max, len(tokens)) + 1):
        shifted = [tokens[i:] for i in range(n)]
        grams.extend(map(" ".join, zip(*shifted)))
    return grams


class TermHasher:
    """Map text to the HashingVectorizer columns of its word n-grams.

    One instance may serve several threads: the memo performs only single dict reads and
    inserts, which CPython runs atomically, and a lost insert only costs a re-hash.
    """

    def __init__(self, n_features: int, ngram_max: int, cache_size: int = DEFAULT_CACHE_SIZE):
        if n_features < 1 or ngram_max < 1:
            raise ValueError(f"n_features and ngram_max must be >= 1, got {n_features}, {ngram_max}")
        self.n_features = n_features
        self.ngram_max = ngram_max
        self._cache: dict[str, int] = {}
        self._cache_size = cache_size

    def columns(self, text: str) -> list[int]:
        """Return one column per n-gram occurrence of ``text`` (repeats included)."""
        grams = word_ngrams(text, self.ngram_max)
        # map() runs the dict lookups in C; only cache misses take the Python path.
        columns = list(map(self._cache.get, grams))
        if None in columns:
            columns = [self._miss(g) if c is None else c for g, c in zip(grams, columns)]
        return columns  # type: ignore[return-value]  # misses were replaced above

    def _miss(self, gram: str) -> int:
        column = hash_index(gram, self.n_features)
        if len(self._cache) < self._cache_size:
            self._cache[gram] = column
        return column
