"""TEXT (+ optional generation parameters) -> the fused generation graph's inputs, left-padded."""


import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from _common import Limits, RequestError, client_error, decode_texts, finite, parameters  # type: ignore[import-not-found]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        params = parameters(args)
        from transformers import AutoTokenizer

        folder = Path(__file__).parent / "tokenizer"
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.tokenizer.padding_side = "left"
        self.defaults = json.loads(params["defaults"])
        self.graph_inputs = json.loads(params["graph_inputs"])
        self.max_positions = int(params["max_positions"])
        # The fused graph is unbatchable for Triton (max_batch_size 0): a request brings its own batch of
        # prompts, and this cap stands in for max_batch_size so one request cannot take all memory.
        self.limits = Limits(params, max_texts=int(params["max_prompts"]))

    def _value(self, request: Any, name: str) -> float:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return self.defaults[name]
        values = tensor.as_numpy().reshape(-1)
        if values.size != 1:
            raise RequestError(f"{name} has {values.size} elements: send exactly one")
        return values[0].item()

    def _seed(self, request: Any) -> int:
        """A negative SEED (the default) draws a fresh one: onnxruntime treats 0 and "no seed" alike,
        so a fixed default would give every request the same random stream."""
        seed = int(self._value(request, "SEED"))
        return seed if seed >= 0 else int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF

    def _one(self, request: Any) -> Any:
        # Sizes first (texts, bytes per text, bytes in all), then the numbers: nothing is tokenized before.
        texts = decode_texts(pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy(), self.limits)
        length_penalty = finite("LENGTH_PENALTY", float(self._value(request, "LENGTH_PENALTY")))
        repetition = finite("REPETITION_PENALTY", float(self._value(request, "REPETITION_PENALTY")))
        if repetition <= 0:
            raise RequestError("REPETITION_PENALTY must be > 0 (1.0 = none)")
        encoded = self.tokenizer(texts, padding=True, return_tensors="np")
        ids, mask = encoded["input_ids"].astype(np.int32), encoded["attention_mask"].astype(np.int32)
        new_tokens = int(self._value(request, "MAX_NEW_TOKENS"))
        min_new = int(self._value(request, "MIN_NEW_TOKENS"))
        beams = int(self._value(request, "NUM_BEAMS"))
        returned = int(self._value(request, "NUM_RETURN_SEQUENCES"))
        if new_tokens < 1:
            raise RequestError(f"MAX_NEW_TOKENS is {new_tokens}: ask for at least 1")
        if ids.shape[1] + new_tokens > self.max_positions:
            raise RequestError(
                f"prompt ({ids.shape[1]} tokens) + MAX_NEW_TOKENS ({new_tokens}) exceeds the model's "
                f"{self.max_positions} positions: shorten the text or ask for fewer tokens")
        if "num_beams" in self.graph_inputs and not 1 <= beams <= 128:
            raise RequestError(f"NUM_BEAMS is {beams}: use 1..128")
        if "num_return_sequences" in self.graph_inputs and not 1 <= returned <= beams:
            raise RequestError(f"NUM_RETURN_SEQUENCES is {returned}: use 1..NUM_BEAMS ({beams})")
        if not 0 <= min_new < new_tokens:
            raise RequestError(f"MIN_NEW_TOKENS is {min_new}: use 0..MAX_NEW_TOKENS-1")
        values = {
            "input_ids": ids,
            "attention_mask": mask,
            "max_length": np.array([ids.shape[1] + new_tokens], np.int32),
            "min_length": np.array([ids.shape[1] + min_new if min_new else 0], np.int32),
            "num_beams": np.array([beams], np.int32),
            "num_return_sequences": np.array([returned], np.int32),
            "length_penalty": np.array([length_penalty], np.float32),
            "repetition_penalty": np.array([repetition], np.float32),
            "seed": np.array([self._seed(request)], np.int32),
        }
        return pb_utils.InferenceResponse([pb_utils.Tensor(n, values[n]) for n in self.graph_inputs])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except RequestError as error:
                responses.append(pb_utils.InferenceResponse(error=client_error(pb_utils, str(error))))
        return responses
