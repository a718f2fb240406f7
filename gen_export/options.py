"""The CLI's choices as plain enums, in a module that imports nothing heavy.

`gen_export.cli` builds its options from these, so `genexport --help` (and every bad-flag error) answers
without importing torch, transformers, onnx or onnxruntime. The library modules re-export them
(`gen_export.search.search_graph.SearchMode`, `gen_export.search.precision.Precision`).
"""

from __future__ import annotations

from enum import StrEnum


class SearchMode(StrEnum):
    BEAM = "beam"
    GREEDY = "greedy"
    SAMPLING = "sampling"


class Precision(StrEnum):
    FP32 = "fp32"
    INT8 = "int8"
    INT4 = "int4"
    FP16 = "fp16"


#: The graph file `genexport beam --search MODE` writes, per mode.
GRAPH_FILES: dict[SearchMode, str] = {
    SearchMode.BEAM: "beam_search.onnx",
    SearchMode.GREEDY: "greedy_search.onnx",
    SearchMode.SAMPLING: "sampling.onnx",
}
