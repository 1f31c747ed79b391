"""CPU inference backends for the embedding model: torch, ONNX Runtime fp32, ONNX Runtime int8.

The ONNX backends use sentence-transformers' own ONNX support (``backend="onnx"``,
its export and dynamic-quantisation helpers), which needs ``optimum`` and
``onnxruntime``: ``pip install -e ".[onnx]"``. The export runs once per model:
the exported folder is kept under ``FRAUD_MODEL_CACHE`` (default
``~/.cache/fraud_assets``), named by the digest of the source model's files, and
published whole (written to a temporary sibling folder, then renamed), so a
killed export is never loaded and two processes never load half of one.

The cache is a local folder on purpose: ONNX Runtime memory-maps its model from
a local file, whatever the storage root is.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable

BACKENDS = ("torch", "onnx", "onnx-int8")
# Bumped whenever the export or quantisation recipe changes: with the CPU's int8 preset
# (export_recipe) it names the export folder and enters the embedding fingerprint, so vectors from two
# recipes never mix and an old export is never reused.
EXPORT_RECIPE = "st-onnx-v2.int8-weight-matmuls"
# file names inside the exported folder; file_suffix of the quantisation helper gives the int8 one
ONNX_FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_int8.onnx"}


def check_backend(backend: str) -> str:
    """The backend name, normalised; a clear error for anything else."""
    name = backend.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"embedding backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    return name


def int8_preset(cpuinfo: str | None = None) -> str:
    """optimum's dynamic-quantisation preset for this CPU: ``avx512_vnni``, ``avx2`` or ``arm64``.

    Why it matters: the avx2 preset quantises weights to u8 (u8 x u8 products
    cannot overflow the 16-bit sums of plain AVX2), while CPUs with VNNI
    instructions (AVX512-VNNI or AVX-VNNI) multiply u8 x s8 exactly; the s8
    weights of the avx512_vnni preset ran 1.6x faster than the avx2 preset on
    a Xeon with AVX512-VNNI. Read from ``/proc/cpuinfo`` (``cpuinfo`` for tests);
    without it, avx2, which is safe on any x86-64 CPU of the last decade.
    """
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    return "avx512_vnni" if re.search(r"\b(avx512_vnni|avx_vnni)\b", cpuinfo) else "avx2"


@functools.cache
def export_recipe() -> str:
    """The export recipe on this machine: :data:`EXPORT_RECIPE` and the CPU's int8 preset."""
    return f"{EXPORT_RECIPE}.{int8_preset()}"


def model_cache_dir() -> Path:
    """Where converted and exported models live: ``FRAUD_MODEL_CACHE``, else ``~/.cache/fraud_assets``."""
    configured = os.environ.get("FRAUD_MODEL_CACHE", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "fraud_assets"


def onnx_model(source_folder: str | Path, model_digest: str, backend: str) -> tuple[Path, str]:
    """``(folder, file_name)`` of the ONNX export of a local sentence-transformers model.

    Exports (fp32 and int8 together) on first use; later calls, in any process,
    reuse the folder. ``model_digest`` identifies the source files, so a changed
    model gets a new export.
    """
    folder = model_cache_dir() / "onnx" / f"{model_digest[:16]}-{hashlib.sha256(export_recipe().encode()).hexdigest()[:8]}"
    if not (folder / ONNX_FILES["onnx-int8"]).is_file():
        _export(Path(source_folder), folder)
    return folder, ONNX_FILES[backend]


def onnx_session_options():
    """ONNX Runtime session options for the embedding model: worker threads that sleep between runs.

    Why: by default ONNX Runtime's workers spin for a while after each run,
    and between two runs sentence-transformers tokenises and pools (in torch,
    on its own threads), so the spinning threads and torch fought over the
    cores; without spinning, int8 encoding ran 13-27 % faster on a 2-core CPU.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _quantization_config(onnx_file: Path):
    """Dynamic int8 for the weight matrices only.

    sentence-transformers' presets also quantise the embedding lookup and the two
    activation-by-activation products of attention (scores and weighted values);
    on all-MiniLM-L6-v2 that gave a mean cosine of 0.986 to the fp32 vectors.
    Quantising only MatMuls with a constant weight input keeps nearly all of
    the speed-up (the weight products are most of the work) and measured 0.991.
    """
    import onnx
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    weights = {tensor.name for tensor in graph.initializer}
    activation_products = [n.name for n in graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]
    preset = getattr(AutoQuantizationConfig, int8_preset())
    return preset(is_static=False, operators_to_quantize=["MatMul"], nodes_to_exclude=activation_products)


def _export(source: Path, folder: Path) -> None:
    try:
        import onnxruntime  # noqa: F401  (the helpers import it lazily; fail here with the hint)
        import optimum.onnxruntime  # noqa: F401
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    except ImportError as exc:
        raise RuntimeError(
            f"the ONNX embedding backends need optimum and onnxruntime ({exc}); "
            'install them with pip install -e ".[onnx]" or set FRAUD_EMBEDDING_BACKEND=torch'
        ) from exc

    def build(staging: Path) -> None:
        model = SentenceTransformer(str(source), backend="onnx", device="cpu", local_files_only=True)
        model.save_pretrained(str(staging))
        export_dynamic_quantized_onnx_model(
            model,
            quantization_config=_quantization_config(staging / ONNX_FILES["onnx"]),
            model_name_or_path=str(staging),
            file_suffix="int8",
        )

    publish_folder(folder, build, ONNX_FILES["onnx-int8"])


def publish_folder(folder: Path, build: Callable[[Path], None], marker: str) -> None:
    """Create ``folder`` whole: ``build`` writes a temporary sibling, which is then renamed.

    So a killed build is never loaded and two processes never load half of one.
    ``marker`` is the file whose presence means another process published first.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        build(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / marker).is_file():
                raise  # not another process's finished folder: a real error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
