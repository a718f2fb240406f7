"""sequences (+ the padded prompt) -> GENERATED_TEXT: the tokens after the prompt, cut at EOS/pad."""


from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from _common import parameters  # type: ignore[import-not-found]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        params = parameters(args)
        from transformers import AutoTokenizer

        folder = Path(__file__).parent / "tokenizer"
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.stop = {int(params["eos_token_id"]), int(params["pad_token_id"])}

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            sequences = pb_utils.get_input_tensor_by_name(request, "sequences").as_numpy()
            prompt_len = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().shape[1]
            if sequences.ndim == 2:  # greedy / sampling: [batch, max_length]
                sequences = sequences[:, None, :]
            texts = []
            for row in sequences:
                decoded = []
                for seq in row:
                    tokens = []
                    for token in seq[prompt_len:].tolist():
                        if token in self.stop:
                            break
                        tokens.append(token)
                    decoded.append(self.tokenizer.decode(tokens, skip_special_tokens=True).encode("utf-8"))
                texts.append(decoded)
            out = np.array(texts, dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("GENERATED_TEXT", out)]))
        return responses
