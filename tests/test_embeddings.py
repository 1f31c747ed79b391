"""Embedding cache behaviour with the real default model (multilingual-e5-small-q4, CPU)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fraud_assets.embeddings import (
    Embedder,
    EmbeddingCache,
    default_prompt,
    embed_texts,
    plan_batches,
    resolve_device,
    resolve_model_source,
    rust_tokens,
)
from fraud_assets.text import normalize_text, text_hash

ROOT = Path(__file__).resolve().parents[1]
TELECOM = Path(__file__).resolve().parents[2] / "shared/datasets/telecom_fraud_texts"

ENGLISH = [
    "Your parcel is held at customs, pay the fee at the link to release it.",
    "Are we still meeting for lunch tomorrow at noon?",
    "Congratulations! You won a prize, reply with your bank card number.",
    "The quarterly report is attached, please review before Friday.",
]
CHINESE = [
    "您的银行卡已被冻结，请点击链接验证身份并解冻。",
    "明天下午三点开会，请准时参加。",
    "恭喜您获得一等奖，请先缴纳手续费领取奖金。",
]


def _frame(texts: list[str]) -> pl.DataFrame:
    texts = [normalize_text(t) for t in texts]
    return pl.DataFrame({"text_hash": [text_hash(t) for t in texts], "text": texts})


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    emb = Embedder(device="cpu")
    emb.load()
    return emb


def test_resolve_source_and_device(tmp_path):
    bundled = Path(resolve_model_source("all-MiniLM-L6-v2"))
    assert (bundled / "model.safetensors").is_file()
    assert resolve_model_source("sentence-transformers/all-MiniLM-L6-v2") == str(bundled)
    assert resolve_model_source(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_model_source("BAAI/bge-small-zh-v1.5") == "BAAI/bge-small-zh-v1.5"
    with pytest.raises(FileNotFoundError):
        resolve_model_source(str(tmp_path / "missing"))
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")


def test_vectors_shape_dtype_norm_and_duplicates(embedder, tmp_path):
    texts = ENGLISH + CHINESE + [ENGLISH[0], CHINESE[1], ENGLISH[0]]
    frame = _frame(texts)
    cache = EmbeddingCache(tmp_path, embedder.fingerprint)
    vectors, stats = embed_texts(frame, embedder, cache)

    assert vectors["text_hash"].to_list() == frame["text_hash"].to_list()
    assert vectors.schema["embedding"] == pl.Array(pl.Float32, 384)
    matrix = vectors["embedding"].to_numpy()
    assert matrix.shape == (len(texts), 384) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(matrix[0], matrix[7]) and np.array_equal(matrix[0], matrix[9])
    assert np.array_equal(matrix[5], matrix[8])
    assert not np.allclose(matrix[0], matrix[1])
    assert stats["rows"] == 10 and stats["unique_texts"] == 7 and stats["newly_embedded"] == 7
    assert stats["dimension"] == embedder.dimension == 384
    assert stats["fingerprint"] == embedder.fingerprint and stats["device"] == "cpu"
    # Same vectors as encoding directly (batching differs, so only up to rounding).
    direct = embedder.encode(frame["text"].to_list())
    np.testing.assert_allclose(matrix, direct, atol=1e-5)


def test_plan_batches_groups_similar_token_lengths_within_the_budget():
    lengths = [5, 256, 40, 256, 12, 130, 40, 7, 256, 64]
    batches = plan_batches(lengths, max_batch=3, attention_budget=2**17)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(lengths)))  # every text exactly once
    assert [lengths[i] for i in rows] == sorted(lengths, reverse=True)  # longest first, neighbours together
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert 1 <= len(batch) <= 3 and (len(batch) == 1 or len(batch) * longest**2 <= 2**17)
    # 2**17 // 256**2 = 2 texts a batch while a 256 leads it; then max_batch decides
    assert [len(b) for b in batches] == [2, 2, 3, 3]
    assert [len(b) for b in plan_batches(lengths, max_batch=4)] == [4, 4, 2]  # no budget: max_batch only
    assert plan_batches([600], max_batch=8, attention_budget=2**17)[0].tolist() == [0]  # over budget alone: still one
    assert plan_batches([], max_batch=8) == []
    with pytest.raises(ValueError):
        plan_batches([1], max_batch=0)


def test_encode_batches_by_tokens_and_returns_rows_in_input_order(embedder):
    long_en = " ".join(ENGLISH * 12)  # past max_seq_length: truncated
    texts = [CHINESE[0], long_en, ENGLISH[1], CHINESE[2] * 6, "ok", ENGLISH[3], CHINESE[1] * 20]
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(embedder.encode(texts), alone, atol=1e-5)
    small = Embedder(device="cpu", batch_size=2)
    np.testing.assert_allclose(small.encode(texts), alone, atol=1e-5)


def _raw_encode(model, texts: list[str], max_seq_length: int = 256) -> np.ndarray:
    """sentence-transformers' own encode of ``texts``, normalised: the reference the project's path must equal."""
    model.max_seq_length = max_seq_length
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def test_rust_tokens_are_what_sentence_transformers_feeds_the_model(embedder):
    model = embedder._model()
    model.max_seq_length = 32  # short, so that half the texts are truncated
    texts = ["  padded  ", "\tTabs\nand Newlines", "ÀÉÎ Ünïcödé ß", " ".join(ENGLISH), CHINESE[0] * 3, "https://x.cn/a?b=1 ok"]
    texts = (texts + ENGLISH + CHINESE) * 8  # more than the texts rust_tokens checks itself
    tokens = rust_tokens(model, texts)
    prompted = [default_prompt(model) + text for text in texts]  # e5's "query: ", as sentence-transformers' encode adds it
    reference = (getattr(model, "preprocess", None) or model.tokenize)(prompted)  # every text, not only the checked ones
    lengths = reference["attention_mask"].numpy().sum(axis=1)
    assert tokens is not None and np.array_equal(tokens.lengths, lengths) and lengths.max() == 32
    for row, n in enumerate(lengths):
        assert tokens.ids[row, :n].tolist() == reference["input_ids"][row, :n].tolist()
    # and the vectors are sentence-transformers' own, whatever the batches
    np.testing.assert_allclose(Embedder(device="cpu", max_seq_length=32).encode(texts), _raw_encode(model, texts, 32), atol=1e-5)


def test_the_default_prompt_is_fed_to_the_model_and_one_pooling_drops_is_left_to_sentence_transformers(embedder):
    """A prompt changes the model's input: the Rust path must put it first, or step aside, never drop it."""
    model = embedder._model()
    texts = ENGLISH + CHINESE
    assert model.default_prompt_name == "query" and default_prompt(model) == "query: "
    with_prompt = _raw_encode(model, texts)
    np.testing.assert_allclose(embedder.encode(texts), with_prompt, atol=1e-5)
    pooling = next(module for module in model if hasattr(module, "include_prompt"))
    pooling.include_prompt = False  # sentence-transformers then leaves the prompt's tokens out of the mean
    try:
        assert default_prompt(model) is None and rust_tokens(model, texts) is None
        without = _raw_encode(model, texts)
        assert not np.allclose(without, with_prompt, atol=1e-3)
        np.testing.assert_allclose(embedder.encode(texts), without, atol=1e-5)
    finally:
        pooling.include_prompt = True
    model.default_prompt_name = None
    try:
        assert default_prompt(model) == "" and not np.allclose(embedder.encode(texts), with_prompt, atol=1e-3)
    finally:
        model.default_prompt_name = "query"
    np.testing.assert_allclose(embedder.encode(texts), with_prompt, atol=1e-5)


def test_second_run_reuses_everything(embedder, tmp_path):
    frame = _frame(ENGLISH + CHINESE)
    cache = EmbeddingCache(tmp_path, embedder.fingerprint)
    first, _ = embed_texts(frame, embedder, cache, chunk_size=3)
    assert len(cache.shards()) == 3  # 7 texts in chunks of 3
    messages: list[str] = []
    second, stats = embed_texts(frame, embedder, cache, chunk_size=3, log=messages.append)
    assert stats["newly_embedded"] == 0 and stats["reused"] == frame.height
    assert messages == [] and len(cache.shards()) == 3
    assert np.array_equal(first["embedding"].to_numpy(), second["embedding"].to_numpy())

    # A superset embeds only the new text.
    more = pl.concat([frame, _frame(["A brand new message about a refund."])])
    _, stats = embed_texts(more, embedder, cache)
    assert (stats["newly_embedded"], stats["reused"]) == (1, frame.height)


def test_settings_change_fingerprint_and_never_mix(embedder, tmp_path):
    frame = _frame(ENGLISH)
    assert Embedder(device="cpu", batch_size=8).fingerprint == embedder.fingerprint
    short = Embedder(device="cpu", max_seq_length=8)
    raw = Embedder(device="cpu", normalize=False)
    fingerprints = {embedder.fingerprint, short.fingerprint, raw.fingerprint}
    assert len(fingerprints) == 3

    embed_texts(frame, embedder, EmbeddingCache(tmp_path, embedder.fingerprint))
    short_cache = EmbeddingCache(tmp_path, short.fingerprint)
    assert short_cache.lookup(frame["text_hash"]).is_empty()
    short_vecs, stats = embed_texts(frame, short, short_cache)
    assert stats["newly_embedded"] == len(ENGLISH)
    raw_vecs, stats = embed_texts(frame, raw, EmbeddingCache(tmp_path, raw.fingerprint))
    assert stats["newly_embedded"] == len(ENGLISH)
    # (this model ends in a Normalize layer, so its vectors are unit length anyway;
    # what matters is that they were computed and stored under their own fingerprint)

    full_vecs, stats = embed_texts(frame, embedder, EmbeddingCache(tmp_path, embedder.fingerprint))
    assert stats["newly_embedded"] == 0
    assert not np.allclose(full_vecs["embedding"].to_numpy(), short_vecs["embedding"].to_numpy(), atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(fingerprints)
    with pytest.raises(ValueError, match="fingerprint"):
        embed_texts(frame, short, EmbeddingCache(tmp_path, embedder.fingerprint))


def test_fingerprint_follows_model_files(embedder, tmp_path):
    # A copy of the model whose tokenizer config differs is a different model.
    source = Path(embedder.source)
    for path in source.rglob("*"):
        target = tmp_path / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    assert Embedder(str(tmp_path), device="cpu").fingerprint == embedder.fingerprint
    config = tmp_path / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    config.unlink()
    config.write_text(json.dumps({**settings, "model_max_length": 128}))
    assert Embedder(str(tmp_path), device="cpu").fingerprint != embedder.fingerprint


def test_unk_share_reflects_vocabulary(embedder):
    minilm = Embedder("all-MiniLM-L6-v2", device="cpu")
    assert minilm.unk_share(CHINESE) > 0.3  # an English vocabulary: most Chinese characters are [UNK]
    assert minilm.unk_share(ENGLISH) < 0.05
    assert embedder.unk_share(CHINESE) < 0.02 and embedder.unk_share(ENGLISH) < 0.02  # the default reads both
    assert embedder.unk_share([]) == 0.0


def test_unk_share_on_real_chinese_messages(embedder):
    path = TELECOM / "label00-last.csv"
    if not path.is_file():
        pytest.skip("telecom dataset not available")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh)
        next(rows)
        texts = [row[0] for _, row in zip(range(50), rows)]
    assert Embedder("all-MiniLM-L6-v2", device="cpu").unk_share(texts) > 0.3
    assert embedder.unk_share(texts) < 0.02


def _run_worker(inp: Path, cache_root: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests/_embed_worker.py"), str(inp), str(cache_root), str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_killed_run_resumes_to_identical_vectors(embedder, tmp_path):
    subjects = ["refund", "parcel", "meeting", "invoice", "prize", "loan", "password", "dinner", "ticket", "account"]
    texts = [
        f"Message {i}: about the {subjects[i % 10]}" + " please reply soon" * (i % 4) + f" ref {i * 7919 % 1000}"
        for i in range(300)
    ]
    inp = tmp_path / "input.parquet"
    frame = _frame(texts)
    frame.write_parquet(inp)
    cache_root = tmp_path / "cache"
    cache = EmbeddingCache(cache_root, embedder.fingerprint)

    proc = _run_worker(inp, cache_root, tmp_path / "killed.parquet", "--chunk-size", "50", "--sleep-per-chunk", "1.0")
    deadline = time.monotonic() + 120
    while len(cache.shards()) < 2:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(cache.shards())
    assert 2 <= committed < 6
    # A write torn by a kill leaves only a temporary file, which is never a shard.
    (cache.directory / ".00000000000000000000-dead.parquet.abc.tmp").write_bytes(b"torn write")

    resumed = _run_worker(inp, cache_root, tmp_path / "resumed.parquet", "--chunk-size", "50")
    log, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, log
    stats = json.loads((tmp_path / "resumed.parquet.json").read_text())
    assert stats["newly_embedded"] == 300 - 50 * committed
    assert stats["reused"] == 50 * committed
    assert log.count("chunk ") == 6 - committed

    # Reference: one uninterrupted run into a fresh cache.
    reference, ref_stats = embed_texts(frame, embedder, EmbeddingCache(tmp_path / "fresh", embedder.fingerprint), chunk_size=50)
    assert ref_stats["newly_embedded"] == 300
    resumed_vectors = pl.read_parquet(tmp_path / "resumed.parquet")
    assert resumed_vectors["text_hash"].to_list() == frame["text_hash"].to_list()
    assert np.array_equal(resumed_vectors["embedding"].to_numpy(), reference["embedding"].to_numpy())
