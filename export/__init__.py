"""ONNX export: bundles of text encoder, codec and LM graphs, validated against PyTorch.

export/ imports engine (to trace its modules); the runtime that reads bundles is
``engine.backends.onnx_backend``. See docs/ONNX.md.
"""
