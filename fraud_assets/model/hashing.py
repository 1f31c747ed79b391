"""Hashed lexical features: char n-grams into buckets (CSR triples), IDF and TF-IDF weights.

numpy / polars only and vectorised; the hash is stable across processes, so a
saved model scores new text exactly as it was trained.
"""

from __future__ import annotations

import numpy as np
import polars as pl

_MARK_START, _MARK_END = "\x02", "\x03"  # text boundaries, so n-grams can see "starts with"
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def hash_char_ngrams(
    texts: pl.Series | list[str],
    buckets: int,
    n_min: int = 1,
    n_max: int = 3,
    lowercase: bool = True,
    chunk_size: int = 16384,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash the char n-grams of every text into buckets; return a CSR triple.

    Returns ``(indptr, ids, counts)``: text ``i`` has distinct bucket ids
    ``ids[indptr[i]:indptr[i+1]]`` (sorted) occurring ``counts[...]`` times.
    Each text is wrapped in start/end marks so n-grams at the edges are
    distinct. The hash is FNV-1a over Unicode code points with a splitmix64
    finaliser, in numpy uint64: deterministic across processes and platforms
    (unlike Python's salted ``hash``), and vectorised, so 100k texts take a
    second or two. Texts are processed in chunks to bound memory.
    """
    s = pl.Series("t", texts, dtype=pl.Utf8) if not isinstance(texts, pl.Series) else texts
    s = s.fill_null("").cast(pl.Utf8)
    if lowercase:
        s = s.str.to_lowercase()
    n_texts = len(s)
    indptrs, ids_parts, count_parts = [np.zeros(1, np.int64)], [], []
    done = 0
    for start in range(0, n_texts, chunk_size):
        chunk = s.slice(start, chunk_size)
        indptr, ids, counts = _hash_chunk(chunk, buckets, n_min, n_max)
        indptrs.append(indptr[1:] + done)
        done += len(ids)
        ids_parts.append(ids)
        count_parts.append(counts)
    indptr = np.concatenate(indptrs)
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
    counts = np.concatenate(count_parts) if count_parts else np.zeros(0, np.int32)
    return indptr, ids, counts


def _hash_chunk(s: pl.Series, buckets: int, n_min: int, n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = s.str.len_chars().to_numpy().astype(np.int64) + 2
    joined = "".join(_MARK_START + t + _MARK_END for t in s.to_list())
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    return _hash_sequences(cps, lengths, buckets, n_min, n_max, skip_marks=True)


def _hash_sequences(
    values: np.ndarray, lengths: np.ndarray, buckets: int, n_min: int, n_max: int, *, skip_marks: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash the n-grams of concatenated integer sequences (text ``i`` has ``lengths[i]`` values).

    Shared by character n-grams (values = code points, with start/end marks
    that are not unigrams themselves) and word n-grams (values = token hashes).
    """
    n = len(lengths)
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    total = len(values)
    keys = []
    with np.errstate(over="ignore"):
        for k in range(n_min, n_max + 1):
            m = total - k + 1
            if m <= 0:
                continue
            valid = owner[:m] == owner[k - 1 :]
            if k == 1 and skip_marks:  # the bare marks are not n-grams
                valid &= (values[:m] != 2) & (values[:m] != 3)
            h = np.full(m, _FNV_OFFSET ^ np.uint64(k), dtype=np.uint64)
            for j in range(k):
                h = (h ^ values[j : j + m]) * _FNV_PRIME
            # splitmix64 finaliser: spreads FNV's weak low bits before the modulo
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
            bucket = (h % np.uint64(buckets)).astype(np.int64)
            keys.append(owner[:m][valid] * buckets + bucket[valid])
    if not keys:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32)
    uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
    rows = uniq // buckets
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    # int32 halves the largest arrays of training (buckets stay below 2**31, counts far below)
    return indptr, (uniq % buckets).astype(np.int32), counts.astype(np.int32)


def compute_idf(indptr: np.ndarray, ids: np.ndarray, buckets: int) -> np.ndarray:
    """Smoothed IDF per bucket (sklearn's formula); 0 for buckets never seen.

    Zero for unseen buckets means n-grams that never occurred in training
    contribute nothing at prediction time (their table rows were never
    trained), rather than random noise.
    """
    n_docs = len(indptr) - 1
    df = np.bincount(ids, minlength=buckets).astype(np.float64)
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    idf[df == 0] = 0.0
    return idf.astype(np.float32)


def tfidf_weights(
    indptr: np.ndarray, ids: np.ndarray, counts: np.ndarray, idf: np.ndarray, chunk_rows: int = 65536
) -> np.ndarray:
    """Sublinear-tf x IDF weights, L2-normalised per text (float32, aligned with ``ids``).

    Computed ``chunk_rows`` texts at a time: the float64 intermediates then
    stay small however many texts there are (a million texts hold over 10^8 n-grams).
    """
    out = np.empty(len(ids), np.float32)
    for first in range(0, len(indptr) - 1, chunk_rows):
        last = min(first + chunk_rows, len(indptr) - 1)
        lo, hi = indptr[first], indptr[last]
        w = (1.0 + np.log(counts[lo:hi].astype(np.float64))) * idf[ids[lo:hi]].astype(np.float64)
        rows = np.repeat(np.arange(last - first), np.diff(indptr[first : last + 1]))
        norms = np.sqrt(np.bincount(rows, weights=w * w, minlength=last - first))
        norms[norms == 0] = 1.0
        out[lo:hi] = w / norms[rows]
    return out
