"""Stage 3: proof that a graph generates what `model.generate` does: the parity harness (`parity`), the
onnxruntime-rules reference search (`reference_search`, the test oracle), sampling checks, and their
transformers-rules counterparts."""
