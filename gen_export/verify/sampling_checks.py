"""What can honestly be proven about a fused Sampling graph, since token parity cannot.

onnxruntime's Sampling operator draws from its own random stream (a C++ engine seeded by the graph's
`seed` input), so its tokens never equal `generate(do_sample=True)`'s for the same seed. Instead, after
every sampling export, these checks run against PyTorch's own probabilities:

* **tiny top_p is greedy**: the same decoder fused with top_p = 1e-6 keeps only the most likely token
  at every step, and must reproduce `generate(do_sample=False)` token for token (left-padded batch,
  min_length, repetition penalty 1.3), through the ordinary parity harness;
* **same seed, same tokens / other seed, other tokens** on a batch of repeated prompts;
* **inside the nucleus**: every sampled token (each step of each row, teacher-forced through PyTorch
  on the same prefix) lies in the top-p nucleus of softmax(logits / temperature), with a small
  tolerance at the nucleus edge for float rounding between onnxruntime and PyTorch;
* **distribution**: many single-step draws of one prompt (one batch of `draws` copies, max_length =
  prompt + 1) against the model's softmax(logits / temperature) restricted to the nucleus and
  renormalised: total variation below a bound, and a chi-square goodness-of-fit p-value reported.
  Tokens whose expected count is below 5 are pooled into one bin, as chi-square requires.

Nucleus rule (onnxruntime's CPU kernel and transformers' TopPLogitsWarper agree): sort descending; a
token is kept iff the probability mass strictly before it is < top_p; the most likely token is always
kept. EOS shows up in the graph's output as pad (the operator writes pad for EOS), so EOS and pad share
one bin and one nucleus test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from rich.console import Group
from rich.text import Text
from transformers import PreTrainedModel

from gen_export.export.architectures.base import ort_position_ids
from gen_export.verify.parity import ParityCase, ParityReport, graph_feed, run_parity, user_tokens
from gen_export.verify.reference_search import SearchFlags

#: top_p of the greedy-equivalent twin graph: only the most likely token survives the nucleus cut.
GREEDY_TOP_P = 1e-6
#: Float slack at the nucleus edge (onnxruntime and PyTorch round softmax/cumsum differently).
NUCLEUS_TOLERANCE = 1e-4
DEFAULT_DRAWS = 2000
DEFAULT_TV_BOUND = 0.05
#: A chi-square p-value below this fails the run (a correct sampler fails it once in 10,000 exports).
MIN_P_VALUE = 1e-4
#: Bytes of first-step logits (draws x prompt x vocabulary x 4) one batch of draws may produce; above it
#: the draws are split into batches with spaced seeds (a real GPT-2 vocabulary at 2000 draws: ~3 GB).
MAX_LOGIT_BYTES = 256 * 2**20
#: Seed spacing between such batches: onnxruntime's engine is minstd_rand0, whose first output for
#: adjacent seeds differs by only 16807 / (2^31 - 1), so neighbouring seeds would start almost alike.
SEED_STRIDE = 104_729
#: Expected count below which tokens are pooled into one "other" bin.
MIN_EXPECTED = 5.0
#: The distribution test's bins: the most likely tokens, each its own bin, plus one pooled bin. For a
#: *correct* sampler, E[TV] over k bins from N draws is at most 0.5 * sqrt(2k / (pi N)): 0.022 for k = 6,
#: N = 2000, so a fixed bound of 0.05 sits far above the noise floor whatever the nucleus size; over 19
#: single-token bins the noise alone reaches ~0.035 and the same bound would fail correct samplers.
MAX_BINS = 6


@dataclass
class SamplingCheck:
    name: str
    passed: bool
    value: float
    bound: str
    detail: str


class CheckVerdicts:
    """The verdict of a list of statistical checks (`self.checks`), shared by both rule families' reports."""

    checks: list[SamplingCheck]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[SamplingCheck]:
        return [c for c in self.checks if not c.passed]

    def counts(self) -> dict[str, int]:
        return {"passed": sum(c.passed for c in self.checks), "FAILED": len(self.failures)}


@dataclass
class SamplingReport(CheckVerdicts):
    """Recorded in the manifest under `parity`; no token parity is claimed for a sampling graph."""

    temperature: float
    top_p: float
    seed: int
    draws: int
    checks: list[SamplingCheck] = field(default_factory=list)
    greedy_parity: ParityReport | None = None
    #: The single-step distribution check: prompt, bins, expected and observed frequencies.
    distribution: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "sampling statistics (no token parity: onnxruntime's random stream is not PyTorch's)",
            "passed": self.passed,
            "counts": self.counts(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "draws": self.draws,
            "checks": [asdict(c) for c in self.checks],
            "distribution": self.distribution,
            "greedy_parity": self.greedy_parity.as_dict() if self.greedy_parity else None,
        }

    def table(self) -> Group:
        """One entry per check (verdict, name, value and bound on one line, the detail under it): the details are
        sentences, which a table column would either cut or wrap into fragments at 80 columns."""
        lines = [Text(f"Sampling checks (temperature {self.temperature:g}, top_p {self.top_p:g}, seed {self.seed}); "
                      "no token parity is claimed", style="italic")]
        for c in self.checks:
            ok = Text("yes", style="green") if c.passed else Text(" NO", style="bold red")
            lines.append(Text.assemble(ok, f"  {c.name}: {c.value:.4g} (needed {c.bound})"))
            lines.append(Text(f"     {c.detail}", style="dim"))
        return Group(*lines)


def nucleus_masks(probs: torch.Tensor, top_p: float, tolerance: float = NUCLEUS_TOLERANCE
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, may_be_kept) over the last dim: exact nucleus, and nucleus widened by `tolerance`."""
    order = torch.argsort(probs, dim=-1, descending=True, stable=True)
    sorted_probs = probs.gather(-1, order)
    before = sorted_probs.cumsum(-1) - sorted_probs
    kept_sorted = before < top_p
    wide_sorted = before < top_p + tolerance
    kept_sorted[..., 0] = True
    wide_sorted[..., 0] = True
    kept = torch.zeros_like(kept_sorted).scatter(-1, order, kept_sorted)
    wide = torch.zeros_like(wide_sorted).scatter(-1, order, wide_sorted)
    return kept, wide


def ngram_banned(sequence: list[int], n: int) -> list[int]:
    """Tokens onnxruntime's no-repeat-ngram processor bans after `sequence` (padding included, as it does)."""
    if n == 0 or n > len(sequence):
        return []
    prefix = sequence[len(sequence) - n + 1:] if n > 1 else []
    return sorted({sequence[i + n - 1] for i in range(len(sequence) - n + 1)
                   if sequence[i:i + n - 1] == prefix})


def sampling_probs(logits: torch.Tensor, temperature: float, banned: list[int] | None = None) -> torch.Tensor:
    """What the operator samples from (before top-p): processors, then softmax(logits / temperature)."""
    logits = logits.double().clone()
    if banned:
        logits[banned] = -math.inf
    return torch.softmax(logits / temperature, dim=-1)


class SeededSession:
    """Presents a Sampling graph to the token-parity harness: `seed` is fed here, hidden from `graph_feed`."""

    def __init__(self, session: Any, seed: int) -> None:
        self._session = session
        self._seed = seed

    def get_inputs(self) -> list[Any]:
        return [i for i in self._session.get_inputs() if i.name != "seed"]

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        return self._session.run(names, dict(feed) | {"seed": np.array([self._seed], np.int32)})


def _sample(session: Any, ids: np.ndarray, mask: np.ndarray, max_length: int, seed: int) -> np.ndarray:
    flags = SearchFlags(max_length=max_length)  # min_length 0, repetition penalty 1: pure T / top-p
    names = [i.name for i in session.get_inputs()]
    return session.run(["sequences"], graph_feed(ids, mask, flags, names, seed=seed))[0]


@torch.no_grad()
def _step_logits(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits at every position of one (left-padded) row, positions as the graph computes them."""
    out = model(input_ids=ids[None], attention_mask=mask[None], position_ids=ort_position_ids(mask[None]),
                use_cache=False)
    return out.logits[0].float()


def _nucleus_violations(
    model: PreTrainedModel, ids: np.ndarray, mask: np.ndarray, rows: list[list[int]], ended: list[bool],
    temperature: float, top_p: float, stop_ids: set[int], no_repeat_ngram_size: int,
) -> tuple[int, int, int]:
    """Teacher-force each sampled row through PyTorch: (tokens checked, outside nucleus, max nucleus size)."""
    checked = outside = widest = 0
    prompt_len = ids.shape[1]
    for row, (tokens, stopped) in enumerate(zip(rows, ended, strict=True)):
        sequence = [*ids[row].tolist(), *tokens]
        full_mask = torch.tensor([*mask[row].tolist(), *[1] * len(tokens)], dtype=torch.int64)
        logits = _step_logits(model, torch.tensor(sequence, dtype=torch.int64), full_mask)[prompt_len - 1:]
        steps = len(tokens) + int(stopped)
        for step in range(steps):
            banned = ngram_banned(sequence[: prompt_len + step], no_repeat_ngram_size)
            kept, wide = nucleus_masks(sampling_probs(logits[step], temperature, banned), top_p)
            widest = max(widest, int(kept.sum()))
            checked += 1
            if step < len(tokens):
                outside += int(not bool(wide[tokens[step]]))
            else:  # the row ended on EOS (written as pad): EOS or pad must have been in the nucleus
                outside += int(not any(bool(wide[s]) for s in stop_ids))
    return checked, outside, widest


def distribution_check(
    session: Any, model: PreTrainedModel, tokenizer: Any, prompts: tuple[str, ...], temperature: float,
    top_p: float, draws: int, seed: int, eos: int, pad: int, no_repeat_ngram_size: int = 0,
) -> dict[str, Any]:
    """Single-step draws of the prompt whose nucleus has the highest entropy (the most informative one)."""
    candidates = []
    for prompt in prompts:
        encoded = tokenizer([prompt], return_tensors="pt")
        ids, mask = encoded["input_ids"][0], encoded["attention_mask"][0]
        banned = ngram_banned(ids.tolist(), no_repeat_ngram_size)
        probs = sampling_probs(_step_logits(model, ids, mask)[-1], temperature, banned)
        kept, wide = nucleus_masks(probs, top_p)
        q = torch.where(kept, probs, torch.zeros_like(probs))
        q = q / q.sum()
        entropy = float(-(q[q > 0] * q[q > 0].log()).sum())
        candidates.append((entropy, prompt, ids, mask, q, kept, wide))
    entropy, prompt, ids, mask, q, kept, wide = max(candidates, key=lambda c: c[0])
    per_batch = max(1, min(draws, MAX_LOGIT_BYTES // (4 * ids.shape[0] * q.shape[0])))
    drawn_parts = []
    for k, start in enumerate(range(0, draws, per_batch)):
        n = min(per_batch, draws - start)
        out = _sample(session, ids[None].repeat(n, 1).numpy(), mask[None].repeat(n, 1).numpy(),
                      ids.shape[0] + 1, seed + SEED_STRIDE * k)
        drawn_parts.append(out[:, ids.shape[0]])
    drawn = np.concatenate(drawn_parts)
    drawn = np.where(drawn == pad, eos, drawn)  # the operator writes pad for EOS: one bin for both
    end_allowed = bool(wide[eos]) or bool(wide[pad])
    q = q.clone()
    if pad != eos:
        q[eos] += q[pad]
        q[pad] = 0.0
    counts = np.bincount(drawn, minlength=q.shape[0]).astype(np.float64)
    outside = int(sum(counts[t] for t in np.flatnonzero(counts)
                      if not (end_allowed if t == eos else bool(wide[t]))))
    expected = q.numpy() * draws
    tv_all_tokens = 0.5 * float(np.abs(counts - expected).sum()) / draws  # reported, not gated (noisy)
    ranked = np.argsort(-expected, kind="stable")[: MAX_BINS - 1]
    own = np.zeros(expected.shape, dtype=bool)
    own[ranked[expected[ranked] >= MIN_EXPECTED]] = True
    bins_expected = [*expected[own].tolist(), float(expected[~own].sum())]
    bins_observed = [*counts[own].tolist(), float(counts[~own].sum())]
    labels = [*tokenizer.convert_ids_to_tokens(np.flatnonzero(own).tolist()), "(all other tokens)"]
    if bins_expected[-1] == 0.0 and bins_observed[-1] == 0.0:  # nothing to pool: drop the empty bin
        bins_expected, bins_observed, labels = bins_expected[:-1], bins_observed[:-1], labels[:-1]
    pairs = list(zip(bins_observed, bins_expected, strict=True))
    tv = 0.5 * sum(abs(o - e) for o, e in pairs) / draws
    # Observed counts in a bin with zero expectation make chi-square infinite: a clear failure.
    chi2 = sum((o - e) ** 2 / e if e > 0 else (math.inf if o > 0 else 0.0) for o, e in pairs)
    dof = max(len(pairs) - 1, 1)
    p_value = 0.0 if math.isinf(chi2) else float(torch.special.gammaincc(
        torch.tensor(dof / 2.0, dtype=torch.float64), torch.tensor(chi2 / 2.0, dtype=torch.float64)))
    return {
        "prompt": prompt,
        "draws": draws,
        "draw_batches": len(drawn_parts),
        "nucleus_size": int(kept.sum()),
        "nucleus_entropy_nats": round(entropy, 4),
        "bins": labels,
        "expected_frequency": [round(e / draws, 4) for e in bins_expected],
        "observed_frequency": [round(o / draws, 4) for o in bins_observed],
        "total_variation": round(tv, 5),
        "total_variation_all_tokens": round(tv_all_tokens, 5),
        "chi_square": round(chi2, 3),
        "degrees_of_freedom": dof,
        "p_value": p_value,
        "outside_nucleus": outside,
    }


def run_sampling_checks(
    session: Any,
    greedy_twin: Any,
    model: PreTrainedModel,
    tokenizer: Any,
    prompts: tuple[str, ...],
    *,
    temperature: float,
    top_p: float,
    pad: int,
    eos: int,
    max_positions: int,
    no_repeat_ngram_size: int = 0,
    seed: int = 1,
    draws: int = DEFAULT_DRAWS,
    tv_bound: float = DEFAULT_TV_BOUND,
    new_tokens: int = 16,
    copies: int = 8,
) -> SamplingReport:
    """Run every check; `greedy_twin` is the same decoder fused as Sampling with top_p = GREEDY_TOP_P."""
    if seed < 1:
        # onnxruntime seeds a minstd_rand0 engine, which maps seed 0 to 1: seeds 0 and 1 are one stream,
        # and the "other seed" check below (seed vs seed + 1) would compare a stream with itself.
        raise ValueError("seed must be >= 1 (onnxruntime's engine gives seeds 0 and 1 the same stream)")
    report = SamplingReport(temperature, top_p, seed, draws)
    tokenizer.padding_side = "left"
    stop = {eos, pad}
    batch = tuple(prompts[:3])

    # 1. Greedy twin == generate(do_sample=False): the shared processors, positions and EOS handling.
    plen = int(tokenizer(list(batch), return_tensors="pt", padding=True)["input_ids"].shape[1])
    base = SearchFlags(max_length=min(plen + new_tokens + 4, max_positions),
                       no_repeat_ngram_size=no_repeat_ngram_size)  # the attribute both graphs carry
    cases = [
        ParityCase("left-padded batch", batch, base),
        ParityCase("min length", batch, replace(base, min_length=min(plen + 8, base.max_length - 1))),
        ParityCase("repetition penalty 1.3", batch, replace(base, repetition_penalty=1.3)),
    ]
    greedy = run_parity(cases, SeededSession(greedy_twin, seed), model, tokenizer, pad, eos, max_positions)
    report.greedy_parity = greedy
    matched = sum(r.graph == r.generate for r in greedy.results)
    report.checks.append(SamplingCheck(
        f"top_p {GREEDY_TOP_P:g} twin == generate(do_sample=False)", matched == len(cases), matched,
        f"= {len(cases)} cases", "left-padded batch of 3; min_length; repetition penalty 1.3"))

    # 2. Seeds: a batch of repeated prompts, sampled three times.
    repeated = tuple(p for p in batch for _ in range(copies))
    encoded = tokenizer(list(repeated), return_tensors="np", padding=True)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    max_length = min(ids.shape[1] + new_tokens, max_positions)
    runs = {s: _sample(session, ids, mask, max_length, s) for s in (seed, seed + 1)}
    again = _sample(session, ids, mask, max_length, seed)
    # Compare what a user receives (cut at EOS/pad): after it the operator leaves uninitialised ids.
    tokens = {s: user_tokens(out[:, None, :], ids.shape[1], stop) for s, out in runs.items()}
    same = tokens[seed] == user_tokens(again[:, None, :], ids.shape[1], stop)
    report.checks.append(SamplingCheck(
        "same seed, same tokens", same, float(same), "= 1",
        f"{len(repeated)} rows x up to {new_tokens} tokens, seed {seed} twice"))

    # 3. Nucleus membership of every sampled token, against PyTorch on the same prefix.
    checked = outside = widest = 0
    for s in runs:
        rows = [r[0] for r in tokens[s]]
        ended = [len(r) < max_length - ids.shape[1] for r in rows]
        c, o, w = _nucleus_violations(model, ids, mask, rows, ended, temperature, top_p, stop,
                                      no_repeat_ngram_size)
        checked, outside, widest = checked + c, outside + o, max(widest, w)
    differ = tokens[seed] != tokens[seed + 1]
    report.checks.append(SamplingCheck(
        "other seed, other tokens", differ or widest == 1, float(differ),
        "= 1 (unless every nucleus is 1 token)",
        f"seeds {seed} and {seed + 1}; widest nucleus seen: {widest} tokens"))
    report.checks.append(SamplingCheck(
        "sampled tokens inside the top-p nucleus", outside == 0, outside, "= 0",
        f"{checked} tokens checked (teacher-forced through PyTorch, edge tolerance {NUCLEUS_TOLERANCE:g})"))

    # 4. Empirical single-step distribution vs softmax(logits / T) restricted to the nucleus.
    dist = distribution_check(session, model, tokenizer, prompts, temperature, top_p, draws, seed, eos, pad,
                              no_repeat_ngram_size)
    report.distribution = dist
    tv_ok = dist["total_variation"] < tv_bound and dist["p_value"] > MIN_P_VALUE
    report.checks.append(SamplingCheck(
        "single-step distribution (total variation)", tv_ok, dist["total_variation"],
        f"< {tv_bound:g} (and chi-square p > {MIN_P_VALUE:g})",
        f"{draws} draws of '{dist['prompt']}': nucleus {dist['nucleus_size']} tokens, "
        f"{len(dist['expected_frequency'])} bins, chi2 {dist['chi_square']:.2f} "
        f"(df {dist['degrees_of_freedom']}), p {dist['p_value']:.3g}"))
    report.checks.append(SamplingCheck(
        "single-step draws inside the nucleus", dist["outside_nucleus"] == 0, dist["outside_nucleus"], "= 0",
        f"{draws} draws"))
    return report
