"""Residual vector quantization (EnCodec / audiocraft ``quantization/core_vq.py``).

Inference is a loop over codebooks: each picks the nearest codeword (Euclidean) of what the
previous ones left, and decoding sums the chosen codewords. Training state lives in buffers
named as in audiocraft's ``EuclideanCodebook`` (``embed``, ``embed_avg``, ``cluster_size``,
``inited``) and is updated only by the explicit ``ema_update`` method, never by ``forward``.

Deliberate difference from audiocraft: a dead code (EMA cluster size below the threshold) is
restarted from a batch vector *after* the EMA step and its ``embed_avg`` / ``cluster_size`` are
set to match, so the restart survives. audiocraft replaces ``embed`` before the EMA step, which
then recomputes ``embed`` from ``embed_avg`` and undoes the restart.

Shape letters: B batch, D dimension, T frames, K codebooks, M vectors (B * T), card codebook
size (``bins``).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _nearest(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of ``embed`` [card, D] for each row of ``x`` [M, D] -> [M].

    Same expression and order of operations as audiocraft / transformers, so ties and
    rounding resolve identically and codes match bit for bit.
    """
    embed_t = embed.t()                                    # [D, card]
    dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed_t
             + embed_t.pow(2).sum(0, keepdim=True))        # [M, card]
    return dist.max(dim=-1).indices


def _sample_rows(x: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` rows of ``x`` [M, D] drawn at random (without replacement when M >= n)."""
    if x.shape[0] >= n:
        idx = torch.randperm(x.shape[0], generator=generator, device="cpu")[:n]
    else:
        idx = torch.randint(0, x.shape[0], (n,), generator=generator, device="cpu")
    return x[idx.to(x.device)]


def kmeans(x: torch.Tensor, n_clusters: int, n_iters: int,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``x`` [M, D]: (means [n_clusters, D], cluster sizes [n_clusters])."""
    means = _sample_rows(x, n_clusters, generator)
    sizes = torch.zeros(n_clusters, device=x.device, dtype=torch.long)
    for _ in range(n_iters):
        buckets = _nearest(x, means)                       # [M]
        sizes = torch.bincount(buckets, minlength=n_clusters)
        sums = torch.zeros_like(means).index_add_(0, buckets, x)
        new_means = sums / sizes.clamp(min=1)[:, None].to(x.dtype)
        means = torch.where((sizes == 0)[:, None], means, new_means)
    return means, sizes


class EuclideanCodebook(nn.Module):
    """One codebook of ``codebook_size`` vectors of size ``dim`` with EMA training state."""

    def __init__(self, dim: int, codebook_size: int, kmeans_init: bool = True,
                 kmeans_iters: int = 50, decay: float = 0.99, epsilon: float = 1e-5,
                 threshold_ema_dead_code: float = 2.0):
        super().__init__()
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_ema_dead_code = threshold_ema_dead_code
        if kmeans_init:
            embed = torch.zeros(codebook_size, dim)        # filled by k-means on first data
        else:
            embed = nn.init.kaiming_uniform_(torch.empty(codebook_size, dim))
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Vectors [..., D] -> nearest code indices [...] (int64)."""
        shape = x.shape
        codes = _nearest(x.reshape(-1, shape[-1]), self.embed)   # [M]
        return codes.view(*shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices [...] -> codewords [..., D]."""
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def init_from_data_(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means initialisation from vectors ``x`` [M, D]; marks the codebook initialised."""
        means, sizes = kmeans(x.float(), self.codebook_size, self.kmeans_iters, generator)
        self.embed.copy_(means)
        self.embed_avg.copy_(means)
        self.cluster_size.copy_(sizes)
        self.inited.fill_(1.0)

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, codes: torch.Tensor,
                   generator: torch.Generator | None = None) -> None:
        """One EMA step towards the vectors ``x`` [M, D] assigned to ``codes`` [M], then
        restart dead codes from random rows of ``x``."""
        x = x.float()
        onehot = F.one_hot(codes, self.codebook_size).to(x.dtype)   # [M, card]
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(onehot.t() @ x, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = ((self.cluster_size + self.epsilon)
                    / (total + self.codebook_size * self.epsilon) * total)  # Laplace smoothing
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        self._restart_dead_codes(x, generator)

    def _restart_dead_codes(self, x: torch.Tensor, generator: torch.Generator | None) -> None:
        threshold = self.threshold_ema_dead_code
        if threshold <= 0:
            return
        dead = self.cluster_size < threshold               # [card]
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        samples = _sample_rows(x, n_dead, generator)       # [n_dead, D]
        self.embed[dead] = samples
        self.embed_avg[dead] = samples * threshold
        self.cluster_size[dead] = threshold


class VectorQuantization(nn.Module):
    """One RVQ stage over channel-first latents [B, D, T]."""

    def __init__(self, dim: int, codebook_size: int, **codebook_kwargs):
        super().__init__()
        self._codebook = EuclideanCodebook(dim, codebook_size, **codebook_kwargs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._codebook.encode(x.permute(0, 2, 1))   # [B, D, T] -> [B, T]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._codebook.decode(codes).permute(0, 2, 1)   # [B, T] -> [B, D, T]


class ResidualVectorQuantizer(nn.Module):
    """``n_q`` codebooks of ``bins`` codewords of size ``dimension``.

    ``encode(x[B, D, T]) -> codes[B, K, T]``; ``decode(codes[B, K, T]) -> [B, D, T]`` (any
    K <= n_q: fewer codebooks give a coarser latent); ``forward`` for training returns the
    straight-through quantized latent, the codes and the commitment loss.
    """

    def __init__(self, dimension: int = 128, n_q: int = 4, bins: int = 2048,
                 decay: float = 0.99, kmeans_init: bool = True, kmeans_iters: int = 50,
                 threshold_ema_dead_code: float = 2.0, commitment_weight: float = 1.0):
        super().__init__()
        self.dimension = dimension
        self.n_q = n_q
        self.bins = bins
        self.commitment_weight = commitment_weight
        self.layers = nn.ModuleList([
            VectorQuantization(dimension, bins, kmeans_init=kmeans_init,
                               kmeans_iters=kmeans_iters, decay=decay,
                               threshold_ema_dead_code=threshold_ema_dead_code)
            for _ in range(n_q)])

    def _n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.n_q
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be in [1, {self.n_q}], got {n_q}")
        return n_q

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Latents [B, D, T] -> codes [B, K, T] (int64), K = ``n_q`` or all codebooks."""
        residual = x
        codes = []
        for layer in self.layers[:self._n_q(n_q)]:
            idx = layer.encode(residual)                   # [B, T]
            residual = residual - layer.decode(idx)
            codes.append(idx)
        return torch.stack(codes, dim=1)                   # [B, K, T]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] -> the sum of the chosen codewords [B, D, T]."""
        if codes.shape[1] > self.n_q:
            raise ValueError(f"codes have {codes.shape[1]} codebooks, the quantizer {self.n_q}")
        out = self.layers[0].decode(codes[:, 0])
        for k in range(1, codes.shape[1]):
            out = out + self.layers[k].decode(codes[:, k])
        return out                                         # [B, D, T]

    def forward(self, x: torch.Tensor,
                n_q: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (quantized [B, D, T], codes [B, K, T], commitment loss []).

        In training mode the quantized latent carries the straight-through gradient to ``x``;
        the loss is the mean over stages of MSE(codeword, residual) times
        ``commitment_weight``. Codebooks are not changed: call ``ema_update`` for that.
        """
        residual = x
        quantized = torch.zeros_like(x)
        codes, losses = [], []
        for layer in self.layers[:self._n_q(n_q)]:
            idx = layer.encode(residual.detach())          # [B, T]
            q = layer.decode(idx)                          # [B, D, T]
            losses.append(F.mse_loss(q.detach(), residual))
            residual = residual - q.detach()
            quantized = quantized + q
            codes.append(idx)
        if self.training:
            quantized = x + (quantized - x).detach()       # straight-through estimator
        commit_loss = torch.stack(losses).mean() * self.commitment_weight
        return quantized, torch.stack(codes, dim=1), commit_loss

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, codes: torch.Tensor,
                   generator: torch.Generator | None = None) -> None:
        """Move the codebooks towards latents ``x`` [B, D, T] quantized as ``codes`` [B, K, T].

        Codebooks not yet initialised are first set by k-means on their residuals (and their
        codes recomputed). Residuals are formed with the codewords from before each update,
        as audiocraft does.
        """
        if codes.shape[0] != x.shape[0] or codes.shape[2] != x.shape[2]:
            raise ValueError(f"codes {tuple(codes.shape)} do not match latents {tuple(x.shape)}")
        residual = x.detach()
        for k in range(codes.shape[1]):
            layer = self.layers[k]
            book = layer._codebook
            flat = residual.permute(0, 2, 1).reshape(-1, residual.shape[1])   # [M, D]
            idx = codes[:, k]
            if not bool(book.inited.item()):
                book.init_from_data_(flat, generator)
                idx = layer.encode(residual)
            q = layer.decode(idx)
            book.ema_update(flat, idx.reshape(-1), generator)
            residual = residual - q
