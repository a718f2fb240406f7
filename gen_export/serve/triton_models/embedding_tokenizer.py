"""TEXT -> input_ids / attention_mask (/ token_type_ids), truncated and padded as at export time."""


import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from _common import Limits, RequestError, client_error, decode_texts, parameters  # type: ignore[import-not-found]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        params = parameters(args)
        from transformers import AutoTokenizer

        folder = Path(__file__).parent / "tokenizer"
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.tokenizer.padding_side = "right"
        self.max_length = int(params["max_length"])
        self.outputs = json.loads(params["outputs"])
        self.limits = Limits(params)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                texts = decode_texts(pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy(), self.limits)
            except RequestError as error:
                responses.append(pb_utils.InferenceResponse(error=client_error(pb_utils, str(error))))
                continue
            encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="np")
            tensors = [pb_utils.Tensor(n, encoded[n].astype(np.int64)) for n in self.outputs]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
