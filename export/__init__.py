"""ONNX export: bundles of text encoder, codec and LM graphs, validated against PyTorch.

export/ imports engine (to trace its modules); the runtime that reads bundles is
``engine.loaders.onnx_bundle``. See docs/ONNX.md.
"""

DEFAULT_OPSET = 17   # the ONNX opset bundles are written in unless --opset says otherwise
