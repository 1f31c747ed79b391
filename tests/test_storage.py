"""The storage seam on a local folder, on memory:// and on an S3 API served by moto."""

import os

import numpy as np
import polars as pl
import pytest
from services.s3 import S3_ENV, s3_server

from fraud_assets.embeddings import EmbeddingCache
from fraud_assets.storage import Storage, as_path, is_local


@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    mp = pytest.MonkeyPatch()
    for name, value in S3_ENV.items():
        mp.setenv(name, value)
    with s3_server() as endpoint:
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("fraud")
        yield endpoint
    mp.undo()


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return Storage(tmp_path / "root")
    if request.param == "memory":
        return Storage(f"memory://fraud-test/{tmp_path.name}")
    request.getfixturevalue("s3_endpoint")
    return Storage(f"s3://fraud/{tmp_path.name}")


def test_roots_are_local_paths_or_uris(tmp_path):
    assert is_local(as_path(tmp_path)) and is_local(as_path(f"file://{tmp_path}"))
    assert not is_local(as_path("s3://bucket/prefix")) and not is_local(as_path("memory://x/y"))


def test_reads_writes_listings_and_removal(storage):
    frame = pl.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    path = storage.asset_path("raw_messages", "day1-abc")
    assert not storage.exists(path) and storage.height(path) == 0
    storage.write_parquet(frame, path)
    assert storage.read_parquet(path).equals(frame) and storage.height(path) == 3
    storage.write_parquet(frame.head(1), storage.asset_path("raw_messages", "day2-def"))
    listed = storage.glob(path.parent, "*.parquet")
    assert [p.name for p in listed] == ["day1-abc.parquet", "day2-def.parquet"]
    assert storage.scan_parquet(listed).collect().height == 4
    storage.write_json({"promoted": "run-1", "text": "诈骗"}, storage.models_dir / "production.json")
    assert storage.read_json(storage.models_dir / "production.json") == {"promoted": "run-1", "text": "诈骗"}
    with storage.local_copy(path) as local:
        assert pl.read_parquet(local).equals(frame)
    storage.remove(path)
    storage.remove(path)  # missing is fine
    assert not storage.exists(path)
    storage.remove_tree(storage.models_dir)
    assert not storage.exists(storage.models_dir / "production.json")


def test_a_failed_write_publishes_nothing(storage):
    path = storage.asset_path("validated_messages", "k")
    storage.write_parquet(pl.DataFrame({"x": [1]}), path)
    with pytest.raises(RuntimeError):
        with storage.atomic_path(path) as tmp:
            tmp.write_bytes(b"PAR1 half a file")
            raise RuntimeError("killed mid-write")
    assert storage.read_parquet(path)["x"].to_list() == [1]  # the old complete file, never the partial one
    assert [p.name for p in storage.glob(path.parent)] == ["k.parquet"]


def test_embedding_cache_on_any_root(storage):
    cache = EmbeddingCache(storage.embedding_cache_dir, "f00d")
    vectors = pl.Series("embedding", np.eye(3, dtype=np.float32), dtype=pl.Array(pl.Float32, 3))
    cache.add(pl.DataFrame({"text_hash": ["a", "b", "c"], "embedding": vectors}))
    zeros = pl.Series("embedding", np.zeros((1, 3), dtype=np.float32), dtype=pl.Array(pl.Float32, 3))
    cache.add(pl.DataFrame({"text_hash": ["c"], "embedding": zeros}))  # the older shard wins
    assert cache.count() == 3 and len(cache.shards()) == 2
    found = cache.lookup(["c", "a", "zz"]).sort("text_hash")
    assert found["text_hash"].to_list() == ["a", "c"] and found["embedding"].to_list()[1] == [0.0, 0.0, 1.0]
    cache.compact()
    assert len(cache.shards()) == 1 and cache.count() == 3


def test_s3_root_really_is_in_the_bucket(s3_endpoint, tmp_path):
    import s3fs

    storage = Storage("s3://fraud/visible")
    storage.write_text("hello", storage.root / "note.txt")
    assert s3fs.S3FileSystem().cat("fraud/visible/note.txt") == b"hello"
    assert not any(p.name.startswith("s3") for p in tmp_path.iterdir()) and not os.path.exists("s3:")


def test_parquet_written_batch_by_batch_is_published_once_complete(storage):
    schema = {"id": pl.Int64, "text": pl.Utf8}
    target = storage.root / "batched" / "file.parquet"
    batches = [pl.DataFrame({"id": range(i * 100, i * 100 + 100), "text": ["x"] * 100}) for i in range(5)]
    with storage.parquet_writer(target, schema) as write:
        for batch in batches:
            write(batch)
            assert not storage.exists(target)  # nothing visible before the block ends
    assert storage.read_parquet(target).equals(pl.concat(batches))
    # slices that cut across the row groups (one per write) give back every row once, in order
    read = list(storage.iter_parquet(target, 150))
    assert [b.height for b in read] == [150, 150, 150, 50]
    assert pl.concat(read).equals(pl.concat(batches))
    assert [b.columns for b in storage.iter_parquet(target, 1000, columns=["text"])] == [["text"]]

    broken = storage.root / "batched" / "broken.parquet"
    with pytest.raises(pl.exceptions.InvalidOperationError):
        with storage.parquet_writer(broken, schema) as write:
            write(batches[0])
            write(pl.DataFrame({"id": ["not a number"], "text": ["y"]}))  # fails to cast: the file must not appear
    assert not storage.exists(broken)
    assert [p.name for p in storage.glob(storage.root / "batched")] == ["file.parquet"]
