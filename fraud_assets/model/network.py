"""The network (FraudNet), its row-wise Adam for the n-gram table, and batched inputs / logits.

Heavy imports (torch) happen inside functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fraud_assets.model.config import FeatureSpec, TrainConfig
from fraud_assets.model.featurize import _Features
from fraud_assets.model.lexical import tfidf_matrix_of_groups


def _build_module(config: TrainConfig, spec: FeatureSpec):
    """Construct the (untrained) network; buffers hold placeholder statistics."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FraudNet(nn.Module):
        """``blend · [wide logit, deep logit, 1] + dense_blend · dense logit``: the parts, stacked.

        Wide: logistic regression over the TF-IDF n-grams, fitted first. Dense: logistic regression
        over the standardised dense features, fitted after the deep part (zero until then). Deep:
        [dense MLP ; n-gram bag] -> head. ``blend`` and ``dense_blend``: stacking weights from validation.
        """

        def __init__(self) -> None:
            super().__init__()
            self.dense_dim = spec.dense_dim
            self.deep_buckets = spec.ngram_buckets
            self.use_wide = spec.wide_buckets > 0
            _add_buffers(self, spec)
            fused = _add_deep_inputs(self, config, spec)
            self.use_deep = fused > 0
            if self.use_deep:
                self.head = nn.Sequential(
                    nn.Linear(fused, config.hidden), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(config.hidden, 1)
                )

        def parts(self, dense, ids, offsets, weights, table=None, deep_ids=None):
            """(wide logit, deep logit, dense logit); zeros for a part the model does not have."""
            n = offsets.shape[0] if offsets is not None else dense.shape[0]
            wide = deep = linear_dense = torch.zeros(n)
            if self.use_wide:
                wide = (
                    F.embedding_bag(ids, self.wide_weight.unsqueeze(1), offsets, mode="sum", per_sample_weights=weights).squeeze(
                        1
                    )
                    + self.wide_bias
                )
            if self.use_deep:
                feats = []
                if self.dense_dim:
                    feats.append(self.dense((dense - self.dense_mean) / self.dense_std))
                if self.deep_buckets:
                    table = self.ngram_table if table is None else table
                    deep_ids = torch.remainder(ids, self.deep_buckets) if deep_ids is None else deep_ids
                    feats.append(F.embedding_bag(deep_ids, table, offsets, mode="sum", per_sample_weights=weights))
                deep = self.head(torch.cat(feats, dim=1)).squeeze(1)
            if self.dense_dim:
                linear_dense = ((dense - self.dense_mean) / self.dense_std) @ self.dense_weight + self.dense_bias
            return wide, deep, linear_dense

        def forward(self, dense, ids, offsets, weights, table=None, deep_ids=None, raw: bool = False):
            """Logits; ``raw``: the model before stacking and calibration, the linear part plus the deep
            part trained on top of it (wide + deep; the dense part exists only as a stacked part)."""
            wide, deep, linear_dense = self.parts(dense, ids, offsets, weights, table, deep_ids)
            if raw:
                return wide + deep
            return self.blend[0] * wide + self.blend[1] * deep + self.dense_blend * linear_dense + self.blend[2]

    return FraudNet()


def _add_buffers(net, spec: FeatureSpec) -> None:
    """Statistics and fitted parts that are not trained by the optimiser, so they travel with the weights."""
    import torch

    net.register_buffer("idf", torch.zeros(spec.hash_space))
    net.register_buffer("blend", torch.tensor([1.0, 1.0, 0.0]))  # wide, deep, bias
    net.register_buffer("dense_blend", torch.ones(1))
    if net.use_wide:
        net.register_buffer("wide_weight", torch.zeros(spec.wide_buckets))
        net.register_buffer("wide_bias", torch.zeros(1))
    if net.dense_dim:
        net.register_buffer("dense_mean", torch.zeros(net.dense_dim))
        net.register_buffer("dense_std", torch.ones(net.dense_dim))
        net.register_buffer("dense_weight", torch.zeros(net.dense_dim))
        net.register_buffer("dense_bias", torch.zeros(1))


def _add_deep_inputs(net, config: TrainConfig, spec: FeatureSpec) -> int:
    """The dense MLP and the n-gram table (in this order: it fixes the seeded init draws); returns the fused width."""
    import torch
    from torch import nn

    fused = 0
    if net.dense_dim:
        net.dense = nn.Sequential(nn.Linear(net.dense_dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout))
        fused += config.hidden
    if net.deep_buckets:
        table = torch.empty(spec.ngram_buckets, config.ngram_dim)
        nn.init.normal_(table, std=0.05)
        # updated by _RowAdam, not by autograd on the full table
        net.ngram_table = nn.Parameter(table, requires_grad=False)
        fused += config.ngram_dim
    return fused


class _RowAdam:
    """Adam on the rows of a big table that a step touches ("lazy Adam").

    Moments of untouched rows are left alone (as in SparseAdam / TF LazyAdam);
    bias correction uses the global step.
    """

    def __init__(self, table, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.table = table
        self.m = torch.zeros_like(table)
        self.v = torch.zeros_like(table)
        self.betas, self.eps, self.t = betas, eps, 0

    def step(self, rows, grad, lr: float) -> None:
        import torch

        b1, b2 = self.betas
        self.t += 1
        with torch.no_grad():
            m = self.m[rows].mul_(b1).add_(grad, alpha=1 - b1)
            v = self.v[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            self.m[rows] = m
            self.v[rows] = v
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            update = m.div_(denom).mul_(-lr / (1 - b1**self.t))
            self.table.index_add_(0, rows, update)  # rows are unique


class _Inputs:
    """Model inputs as tensors, with fast batch gathering from the CSR.

    ``matrix`` is the same TF-IDF as a scipy CSR (each lexical group
    L2-normalised on its own, then summed), which the linear part is fitted on.
    """

    def __init__(self, feats: _Features, module) -> None:
        import torch

        self.n = feats.n
        self.dense = torch.from_numpy(feats.dense) if feats.dense is not None else None
        self.indptr: Any = None
        self.ids: Any = None
        self.weights: Any = None
        self.matrix: Any = None
        if feats.lexical:
            self._attach(tfidf_matrix_of_groups(feats.lexical, module.idf.detach().cpu().numpy()))

    def _attach(self, matrix) -> None:
        """Use ``matrix`` for the linear part and its arrays, shared, for batches."""
        import torch

        self.matrix, self.shape = matrix, matrix.shape
        self.indptr = torch.from_numpy(matrix.indptr.astype(np.int64))
        self.ids = torch.from_numpy(matrix.indices)  # int32, shared with the matrix; int64 per batch
        self.weights = torch.from_numpy(matrix.data)

    def spill(self, folder: Path) -> None:
        """Write the n-gram matrix's values and indices to ``folder`` and drop them from memory."""
        np.save(folder / "data.npy", self.matrix.data)
        np.save(folder / "indices.npy", self.matrix.indices)
        self.matrix = self.ids = self.weights = None

    def restore(self, folder: Path) -> None:
        """Bring back what :meth:`spill` wrote (no-op when nothing was spilled)."""
        import scipy.sparse as sp

        if self.matrix is not None or not (folder / "data.npy").exists():
            return
        data, indices = np.load(folder / "data.npy"), np.load(folder / "indices.npy")
        matrix = sp.csr_matrix((data, indices, self.indptr.numpy()), shape=self.shape)
        matrix.has_sorted_indices = True
        self._attach(matrix)

    def set_dense(self, dense: np.ndarray | None) -> None:
        """The dense matrix, when it is built after the n-gram matrix (training does so; see train.py)."""
        import torch

        self.dense = torch.from_numpy(dense) if dense is not None else None

    def batch(self, rows):
        import torch

        dense = self.dense[rows] if self.dense is not None else None
        if self.indptr is None:
            return dense, None, None, None
        starts = self.indptr[rows]
        lens = self.indptr[rows + 1] - starts
        offsets = torch.zeros_like(lens)
        torch.cumsum(lens[:-1], 0, out=offsets[1:])
        gather = torch.repeat_interleave(starts - offsets, lens) + torch.arange(int(lens.sum()))
        return dense, self.ids[gather].long(), offsets, self.weights[gather]


def _logits(module, inputs: _Inputs, batch_size: int = 8192, *, raw: bool = False, parts: bool = False):
    """Logits for every row (``raw``: before the blend); ``parts``: the (wide, deep, dense) triple instead."""
    import torch

    was_training = module.training
    module.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, inputs.n, batch_size):
            rows = torch.arange(start, min(start + batch_size, inputs.n))
            batch = inputs.batch(rows)
            out.append(torch.stack(module.parts(*batch), 1) if parts else module(*batch, raw=raw))
    module.train(was_training)
    if not out:
        empty = np.zeros(0, np.float32)
        return (empty, empty.copy(), empty.copy()) if parts else empty
    result = torch.cat(out).numpy()
    return (result[:, 0], result[:, 1], result[:, 2]) if parts else result
