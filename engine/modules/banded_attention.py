"""Banded self-attention computed only inside the band (MAGNeT's restricted context).

Attention limited to ``|i - j| <= band`` done as a masked full ``T x T`` product wastes almost
all of its arithmetic when ``band << T`` (MAGNeT: band 5 over ~500 frames). Here the queries are
cut into blocks of ``block`` rows; the block of frames ``[s, e)`` can only see keys
``[s - band, e + band)`` (clipped to ``[0, T)``), so each block is one
``scaled_dot_product_attention`` call on views of q, k, v (no copies) with a small mask, and the
arithmetic drops from ``T^2`` to about ``T (block + 2 band)``. The result equals the masked full
attention up to float summation order.

One call per block was measured faster on CPU than a single batched call over blocks (windows
gathered or unfolded from padded keys): a mask broadcast over blocks sends SDPA to its math
path, and the padded / gathered copies cost more than the saved per-call overhead
(bench/RESULTS_banded_attention.md).

An exported graph cannot loop over blocks of a length it does not know:
``banded_attention_traced`` is the same computation with every size taken from tensors, the
windows gathered and all blocks in one batched call, which onnxruntime runs as one
``MultiHeadAttention`` (the lm_full export; bench/RESULTS_magnet.md).

Shape letters: B batch, H heads, T frames, Dh head dim; N blocks, R rows per block, W window.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Query rows per block: the fastest of 8 / 16 / 32 / 64 measured at musicgen-small shape on one
# CPU thread (bench/RESULTS_banded_attention.md).
DEFAULT_BLOCK = 32


def banded_pays(steps: int, band: int, block: int = DEFAULT_BLOCK) -> bool:
    """Whether computing only inside the band beats the masked full product for ``steps``
    frames: the key windows (``block + 2 band`` wide) must cover well under ``steps``, or the
    per-block call overhead wins (measured crossover, band 5, one thread: T ~ 80 at 16 heads,
    ~ 140 at 4 heads).
    """
    return steps >= 4 * (block + 2 * band)


def _block_mask(start: int, end: int, key_start: int, key_end: int, band: int,
                device: torch.device) -> torch.Tensor:
    """Boolean mask [end - start, key_end - key_start] (True = attend) of queries at frames
    ``[start, end)`` against keys at ``[key_start, key_end)``: ``|i - j| <= band``."""
    q_pos = torch.arange(start, end, device=device)[:, None]
    k_pos = torch.arange(key_start, key_end, device=device)[None, :]
    return (q_pos - k_pos).abs() <= band


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, band: int,
                     block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Self-attention of ``q``, ``k``, ``v`` [B, H, T, Dh] restricted to ``|i - j| <= band``.

    Returns [B, H, T, Dh] (a view of a [B, T, H, Dh] buffer, so merging the heads back is
    free), equal to float tolerance to ``scaled_dot_product_attention`` with the boolean band
    mask. ``band >= T - 1`` (every key in reach) is plain full attention.
    """
    if q.dim() != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"q, k, v must share one [B, H, T, Dh] shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if isinstance(band, bool) or not isinstance(band, int) or band < 0:
        raise ValueError(f"band must be an integer >= 0, got {band!r}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    b, h, steps, dh = q.shape
    if band >= steps - 1:
        return F.scaled_dot_product_attention(q, k, v)
    out = q.new_empty(b, steps, h, dh).transpose(1, 2)  # [B, H, T, Dh] over [B, T, H, Dh]
    # Every block whose window lies inside [0, T) has the same mask: build it once.
    inner = _block_mask(band, band + block, 0, block + 2 * band, band, q.device)
    for start in range(0, steps, block):
        end = min(start + block, steps)
        key_start, key_end = max(0, start - band), min(steps, end + band)
        if key_start == start - band and key_end == end + band and end - start == block:
            mask = inner
        else:
            mask = _block_mask(start, end, key_start, key_end, band, q.device)
        out[:, :, start:end] = F.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, key_start:key_end], v[:, :, key_start:key_end],
            attn_mask=mask)  # [B, H, end - start, Dh]
    return out


def banded_attention_traced(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            band: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """:func:`banded_attention` for an exported graph: ``band`` a 0-d int64 tensor (a graph
    input), every size computed from tensors, no Python branch, so one traced graph serves
    every band and length.

    The queries are cut into blocks of ``block`` rows; each block's keys and values, a window
    of ``block + 2 band`` frames (clipped into ``[0, T)``), are gathered, and all blocks run as
    one batched attention (batch ``B * blocks``) with a small band mask: the cost grows with the
    band, not with ``T^2``. A band that reaches every key (``band >= T - 1``, MAGNeT's stage 0)
    makes it one block of all ``T`` rows over all ``T`` keys: plain full attention.
    Returns [B, H, T, Dh], equal to float tolerance to the band-masked full attention.
    """
    b, h, steps, dh = q.shape
    pos = torch.arange(steps, device=q.device)                                   # [T]
    n = pos[-1] + 1                                                              # T, a tensor
    band = band.to(pos.dtype)
    rows = torch.where(band >= n - 1, n, torch.clamp(n, max=block))              # block rows
    width = torch.minimum(rows + 2 * band, n)                                    # key window
    starts = torch.arange((n + rows - 1) // rows, device=q.device) * rows       # [N] block starts
    q_idx = torch.minimum(starts[:, None] + torch.arange(rows, device=q.device)[None, :], n - 1)
    k_start = torch.minimum(torch.clamp(starts - band, min=0), n - width)        # [N]
    k_idx = k_start[:, None] + torch.arange(width, device=q.device)[None, :]    # [N, W]
    rows_n, width_n = q_idx.shape[1], k_idx.shape[1]
    mask = (q_idx[:, :, None] - k_idx[:, None, :]).abs() <= band                # [N, R, W]

    def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """x [B, H, T, Dh] at idx [N, M] -> [B * N, H, M, Dh]. Gathered in the frames-major
        layout the projection wrote (x is a transposed view of [B, T, H, Dh]), so the graph
        moves no more data than the gather itself and one transpose."""
        g = x.transpose(1, 2).index_select(1, idx.reshape(-1))                   # [B, N*M, H, Dh]
        return g.reshape(-1, idx.shape[1], h, dh).transpose(1, 2)

    batched_mask = mask[None, :, None].expand(b, -1, 1, rows_n, width_n) \
        .reshape(-1, 1, rows_n, width_n)                                         # [B * N, 1, R, W]
    out = F.scaled_dot_product_attention(gather(q, q_idx), gather(k, k_idx), gather(v, k_idx),
                                         attn_mask=batched_mask)                 # [B * N, H, R, Dh]
    out = out.transpose(1, 2).reshape(b, -1, h, dh)[:, :steps]                 # [B, T, H, Dh]
    return out.transpose(1, 2)
