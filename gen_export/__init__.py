"""genexport: Hugging Face checkpoints to ONNX Runtime and Triton artifacts, with parity proof."""

__version__ = "0.1.0"
