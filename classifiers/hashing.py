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
from typing import AnyStr

import mmh3
import numpy as np

# Runs of two or more word characters.  findall() returns the same tokens as
# scikit-learn's default r"(?u)\b\w\w+\b" (a greedy run always ends at a boundary), but
# without the boundary checks the regex runs about twice as fast.
TOKEN_PATTERN = r"\w\w+"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
# ASCII text is tokenized as bytes, because on ASCII \w means [a-zA-Z0-9_] and mmh3
# hashes a str as its UTF-8 bytes.  This bytes.translate table lowers the word characters
# and turns every other byte into a space, so splitting the translated text yields the
# maximal runs of word characters.  Those of two or more characters are exactly what
# TOKEN_PATTERN finds in the lowered text.  Lowering and tokenizing took 3.0 µs of CPU
# per prompt this way, against 4.2 µs with TOKEN_PATTERN as a bytes pattern (the 2,801
# ASCII prompts among the first 3,000 of the traffic mix, one core of a 2-core virtual
# machine).
_ASCII_WORD_TABLE = bytes(
    byte if byte in b"abcdefghijklmnopqrstuvwxyz0123456789_" else 0x20
    for byte in bytes(range(256)).lower()
)
_INT32_MIN = -(2**31)


def hash_index(term: str, n_features: int) -> int:
    """Return the HashingVectorizer column of ``term`` for ``n_features`` columns."""
    return _column(mmh3.hash(term, 0), n_features)


def word_ngrams(text: str, ngram_max: int) -> list[str]:
    """Return the word n-grams of ``text`` in HashingVectorizer order (unigrams first)."""
    return _ngrams(_TOKEN_RE.findall(text.lower()), ngram_max, " ")


def _ngrams(tokens: list[AnyStr], ngram_max: int, separator: AnyStr) -> list[AnyStr]:
    grams = list(tokens)
    # shifted[i] starts at token i, so zip(*shifted) yields the runs of n tokens.
    shifted = [tokens]
    for n in range(2, min(ngram_max, len(tokens)) + 1):
        shifted.append(tokens[n - 1:])
        grams.extend(map(separator.join, zip(*shifted)))
    return grams


class TermHasher:
    """Map text to the HashingVectorizer columns of its word n-grams.

    Terms are hashed on every call, without a memo.  When a memo of term -> column was
    tried, it took 8.5 µs of CPU per prompt once warm and 27 µs while it filled, against
    7 µs for hashing the terms.  Most bigrams are unique, so in a gateway such a memo
    kept growing toward its bound.
    ``columns``, tokenizing included, took 14.3 µs of CPU per traffic-mix prompt
    (``python -m bench.classifier --stages --repeat 9``, 9,821 prompts, bundled model's
    settings, one core of a 2-core AMD EPYC virtual machine).  The list-based version
    before it took 19.3 µs there.
    An instance keeps no state between calls and is safe to share across threads.
    """

    def __init__(self, n_features: int, ngram_max: int) -> None:
        if n_features < 1 or ngram_max < 1:
            raise ValueError(f"n_features and ngram_max must be >= 1, got {n_features}, {ngram_max}")
        self.n_features = n_features
        self.ngram_max = ngram_max
        # With a power of two, the modulo is a bitwise AND with n_features - 1.
        self._mask = n_features - 1 if n_features & (n_features - 1) == 0 else None

    def columns(self, text: str) -> np.ndarray:
        """Return one int64 column per n-gram occurrence of ``text`` (repeats included)."""
        grams: list[bytes] | list[str]
        if text.isascii():
            runs = text.encode().translate(_ASCII_WORD_TABLE).split()
            grams = _ngrams([run for run in runs if len(run) > 1], self.ngram_max, b" ")
        else:
            grams = _ngrams(_TOKEN_RE.findall(text.lower()), self.ngram_max, " ")
        # map() calls mmh3.hash (seed 0) from C, and fromiter stores the signed 32-bit hashes.
        hashes = np.fromiter(map(mmh3.hash, grams), np.int64, len(grams))
        # In int64, abs(INT32_MIN) is 2**31, and 2**31 % n equals scikit-learn's special
        # case (2147483647 - (n - 1)) % n (see _column) for every n.
        np.abs(hashes, out=hashes)
        if self._mask is not None:
            np.bitwise_and(hashes, self._mask, out=hashes)
        elif self.n_features <= 2**31:
            # abs(h) <= 2**31, so with more columns than that the modulo changes nothing.
            np.remainder(hashes, self.n_features, out=hashes)
        return hashes


def _column(h: int, n_features: int) -> int:
    if h == _INT32_MIN:
        # scikit-learn's special case: abs(INT32_MIN) overflows in int32.
        return (2147483647 - (n_features - 1)) % n_features
    return abs(h) % n_features
