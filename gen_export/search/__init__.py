"""Stage 2: the generation graph around an exported decoder: onnxruntime's fused search operator
(`search_graph`), the transformers-rules loop (`hf_search`), decoder fusion (`fusion`)
and quantization (`precision`)."""
