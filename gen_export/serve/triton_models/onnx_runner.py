"""Runs the exported ONNX file with onnxruntime (for servers without the onnxruntime backend)."""


import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

from _common import parameters  # type: ignore[import-not-found]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        params = parameters(args)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        self.session = ort.InferenceSession(str(Path(__file__).parent / "model.onnx"), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = json.loads(params["outputs"])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            feed = {}
            for name in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    feed[name] = tensor.as_numpy()
            try:
                results = self.session.run(self.outputs, feed)
            except Exception as error:  # onnxruntime's own message names the bad input
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error).splitlines()[0])))
                continue
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(n, v) for n, v in zip(self.outputs, results, strict=True)]))
        return responses
