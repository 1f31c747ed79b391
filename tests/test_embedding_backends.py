"""CPU embedding backends: torch, ONNX fp32 and ONNX int8 through sentence-transformers' ONNX support."""

import importlib.util
import platform

import numpy as np
import pytest

from fraud_assets.embedding_backends import int8_preset
from fraud_assets.embeddings import Embedder

needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("optimum") is None,
    reason="the onnx extra (optimum, onnxruntime) is not installed",
)
TEXTS = [
    "Your parcel is waiting at the depot, reply 1 to reschedule delivery",
    "【公安局】您涉嫌洗钱，请立即将资金转入安全账户",
    "Meeting moved to 3pm tomorrow, see you there",
    "Congratulations! You won a prize, click http://x.example to claim",
    "您的验证码是4821，五分钟内有效，请勿告诉他人",
] * 4


def test_unknown_backend_and_onnx_on_cuda_are_clear_errors():
    with pytest.raises(ValueError, match="torch, onnx, onnx-int8"):
        Embedder(backend="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        _ = Embedder(backend="onnx", device="cuda").device


def test_backend_is_part_of_the_fingerprint_so_vectors_never_mix():
    torch_fp = Embedder().fingerprint
    assert Embedder(backend="torch").fingerprint == torch_fp  # unchanged for existing caches
    assert len({torch_fp, Embedder(backend="onnx").fingerprint, Embedder(backend="onnx-int8").fingerprint}) == 3


@pytest.mark.skipif(platform.machine().lower() in ("arm64", "aarch64"), reason="ARM CPUs take the arm64 preset")
def test_int8_weights_are_signed_only_where_the_cpu_has_vnni():
    assert int8_preset("flags\t\t: fpu sse4_2 avx2 fma avx512f avx512_vnni amx_int8") == "avx512_vnni"
    assert int8_preset("flags\t\t: fpu sse4_2 avx2 fma avx_vnni") == "avx512_vnni"
    assert int8_preset("flags\t\t: fpu sse4_2 avx2 fma avx512f") == "avx2"  # no VNNI: u8 weights, no overflow
    assert int8_preset("") == "avx2"


@needs_onnx
def test_onnx_backends_agree_with_torch_and_export_once(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("FRAUD_MODEL_CACHE", str(tmp_path / "models"))
    reference = Embedder(max_seq_length=128).encode(TEXTS)
    vectors = {}
    torch_threads = torch.get_num_threads()
    for backend in ("onnx", "onnx-int8"):
        embedder = Embedder(max_seq_length=128, backend=backend)
        vectors[backend] = embedder.encode(TEXTS)
        assert torch.get_num_threads() == torch_threads  # lowered to 1 during the encode only
        embedder.release()
        assert vectors[backend].shape == reference.shape and vectors[backend].dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors[backend], axis=1), 1.0, atol=1e-4)
    exports = list((tmp_path / "models" / "onnx").iterdir())
    assert len(exports) == 1 and not [p for p in exports if p.name.startswith(".")]  # one export, published whole
    stamp = {p: p.stat().st_mtime_ns for p in exports[0].rglob("*.onnx")}

    cosine = {name: (v * reference).sum(axis=1) for name, v in vectors.items()}
    assert cosine["onnx"].min() > 0.9999  # the same network, another runtime
    assert cosine["onnx-int8"].mean() > 0.98  # int8 weights: close, not equal (benchmarks measure it)

    again = Embedder(max_seq_length=128, backend="onnx-int8").encode(TEXTS)  # reloads from the export
    assert np.array_equal(again, vectors["onnx-int8"])
    assert {p: p.stat().st_mtime_ns for p in exports[0].rglob("*.onnx")} == stamp  # not exported again
