"""Attention as one onnxruntime ``MultiHeadAttention`` node in the LM graphs.

The TorchScript exporter writes ``F.scaled_dot_product_attention`` as about a dozen small ops
(Transpose, Sqrt, Mul, MatMul, Where, Add, Softmax, IsNaN, Where, MatMul), and onnxruntime's
optimizer (``onnxruntime.transformers.optimizer``, any model type) does not fuse that pattern:
a KV-cached step at batch 2 x 1 token spends its time in per-op overhead, not arithmetic.
Inside ``fused_attention()`` the exporter writes each call as onnxruntime's contrib
``com.microsoft.MultiHeadAttention`` instead: query ``[B, S, H * Dh]``, keys and values in the
``[B, H, L, Dh]`` layout the KV cache and the cross K/V already have, the mask as an additive
``attention_bias`` ``[1 | B, 1 | H, S, L]``. The LM graphs never mask a whole row (causal and
banded masks keep the diagonal; cross-attention has no mask), which is where PyTorch returns
zeros and the fused op would not.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

import torch

SDPA = "aten::scaled_dot_product_attention"
DOMAIN = "com.microsoft"


def _mha(heads: int, g: Any, query: Any, key: Any, value: Any, attn_mask: Any = None,
         dropout_p: float = 0.0, is_causal: bool = False, scale: Any = None,
         enable_gqa: bool = False) -> Any:
    from torch.onnx import symbolic_helper as sh
    from torch.onnx._internal.torchscript_exporter.symbolic_opset14 import \
        _causal_attention_mask

    if not sh._is_none(scale) or enable_gqa or dropout_p:
        raise ValueError("fused attention supports the default scale, no GQA and no dropout")
    q = g.op("Transpose", query, perm_i=[0, 2, 1, 3])
    q = g.op("Reshape", q, g.op("Constant", value_t=torch.tensor([0, 0, -1])))
    if sh._maybe_get_const(is_causal, "b"):
        attn_mask = _causal_attention_mask(g, query, key)
    bias = None
    if not sh._is_none(attn_mask):
        from torch.onnx._internal.torchscript_exporter import _type_utils
        if _type_utils.JitScalarType.from_value(attn_mask) == _type_utils.JitScalarType.BOOL:
            bias = g.op("Where", attn_mask, g.op("Constant", value_t=torch.tensor([0.0])),
                        g.op("Constant", value_t=torch.tensor([-float("inf")])))
        else:
            bias = attn_mask
        rank = sh._get_tensor_rank(attn_mask)
        if rank is None:
            raise ValueError("fused attention needs a mask of known rank")
        if rank < 4:
            axes = list(range(4 - rank))
            bias = g.op("Unsqueeze", bias, g.op("Constant", value_t=torch.tensor(axes)))
    none = sh._optional_input_placeholder_tensor(g)
    inputs = [q, key, value, none, none] + ([bias] if bias is not None else [])
    out = g.op(f"{DOMAIN}::MultiHeadAttention", *inputs, num_heads_i=heads)   # [B, S, H * Dh]
    out.setType(query.type().with_sizes([None, None, None]))   # a custom op's type is unknown
    out = g.op("Reshape", out, g.op("Constant", value_t=torch.tensor([0, 0, heads, -1])))
    return g.op("Transpose", out, perm_i=[0, 2, 1, 3])                       # [B, H, S, Dh]


@contextmanager
def fused_attention(opset: int, num_heads: int) -> Iterator[None]:
    """While inside, ``torch.onnx.export`` (TorchScript) writes scaled-dot-product attention as
    ``com.microsoft.MultiHeadAttention`` with ``num_heads`` heads (the traced query's head
    axis is not known to the symbolic: dynamic axes leave its sizes unset)."""
    from torch.onnx import symbolic_helper as sh
    symbolic = sh.parse_args("v", "v", "v", "v", "f", "b", "v", "b")(partial(_mha, num_heads))
    torch.onnx.register_custom_op_symbolic(SDPA, symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(SDPA, opset)
