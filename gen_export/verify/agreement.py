"""A quantized graph against the fp32 graph it was made from: how often both return exactly the same tokens.

Exact token parity cannot hold for quantized weights; the fp32 graph passes the parity matrix against `generate`,
and the quantized one (gen_export.search.precision) is measured against it on the same cases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gen_export.options import Precision
from gen_export.verify.parity import ParityCase, graph_feed, user_tokens


@dataclass
class AgreementReport:
    """How often the quantized graph returns exactly what the fp32 graph returns."""

    precision: str
    sequences: int = 0
    identical_sequences: int = 0
    tokens: int = 0
    identical_tokens: int = 0
    cases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sequence_agreement(self) -> float:
        return self.identical_sequences / self.sequences if self.sequences else 0.0

    @property
    def token_agreement(self) -> float:
        return self.identical_tokens / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"sequence_agreement": self.sequence_agreement,
                               "token_agreement": self.token_agreement}


def measure_agreement(cases: list[ParityCase], quantized: Any, fp32: Any, tokenizer: Any, pad: int, eos: int,
                      precision: Precision) -> AgreementReport:
    report = AgreementReport(precision.value)
    tokenizer.padding_side = "left"
    names = [i.name for i in quantized.get_inputs()]
    for case in cases:
        encoded = tokenizer(list(case.prompts), return_tensors="np", padding=True)
        feed = graph_feed(encoded["input_ids"], encoded["attention_mask"], case.flags, names)
        outputs = []
        for session in (quantized, fp32):
            sequences = session.run(["sequences"], feed)[0]
            outputs.append(user_tokens(sequences if sequences.ndim == 3 else sequences[:, None, :],
                                       encoded["input_ids"].shape[1], {eos, pad}))
        same_sequences = same_tokens = total_tokens = total_sequences = 0
        for row_q, row_f in zip(*outputs, strict=True):
            for seq_q, seq_f in zip(row_q, row_f, strict=True):
                total_sequences += 1
                same_sequences += seq_q == seq_f
                length = max(len(seq_q), len(seq_f))
                total_tokens += length
                same_tokens += sum(a == b for a, b in zip(seq_q, seq_f, strict=False))
        report.sequences += total_sequences
        report.identical_sequences += same_sequences
        report.tokens += total_tokens
        report.identical_tokens += same_tokens
        report.cases.append({"name": case.name, "identical_sequences": same_sequences,
                             "sequences": total_sequences})
    return report
