"""Stage 1 of an export: checkpoint checks, the declarative export spec, the decoder export and its checks, the
architecture registry (`architectures/`), tied embeddings, onnxruntime-genai files."""
