"""A small PyTorch search that follows onnxruntime's BeamSearch / GreedySearch kernel rules.

It exists so the parity report can tell "the graph differs from `generate` because onnxruntime's
rules differ" apart from a real bug: the graph must equal this reference on every case, and this
reference equals `generate` wherever the two rule sets coincide (the tests check both).

Rules (onnxruntime contrib_ops/cpu/transformers: beam_search_impl_gpt.h, generation_device_helper.cc,
logits_processor.cc, beam_search_scorer.cc; GPT subgraph inputs from subgraph_gpt.cc):

* Positions: prompt tokens count from 0 and pad_token_id tokens get 0, by token id, whatever the
  attention mask says (`kernel_positions`); each step appends mask 1 and position+1.
* Beam search scores: log_softmax(logits), then processors: repetition penalty over every token
  already in the sequence, prompt and padding included (score < 0 ? score * p : score / p);
  no-repeat-ngram; min length (EOS -> -inf while the sequence, padded prompt included, is shorter
  than min_length). Then the running beam score is added; at the first step only beam 0 is live.
* Top 2 * num_beams candidates over (beam, token). An EOS candidate ranked below num_beams is
  skipped; otherwise it finishes a hypothesis: the sequence *without* EOS, scored
  sum_logprobs / len(sequence) ** length_penalty (prompt included). Other candidates fill the next
  beams until num_beams are taken.
* A batch entry is done when num_beams hypotheses exist and (early_stopping, or the worst kept score
  >= best candidate score / cur_len ** length_penalty). The "best candidate score" is read the way
  beam_search_scorer.cc reads it: the maximum of `next_scores.subspan(batch * num_beams, 2 * num_beams)`
  in the [batch, 2 * num_beams] top-k buffer, whose rows are 2 * num_beams long. For batch entry 0 that
  is its own row; for entry b >= 1 it is a window half a row per entry too early, so entry b is judged
  by another entry's candidates (`done_check_best_score`). transformers reads the entry's own row.
* A done entry is padded with beam index 0, a global row index (entry 0's first beam) where all others
  are batch * num_beams + beam: its rows take row 0's sequence and past key/values plus a pad token,
  under their own (never reordered) attention mask and position counter (`done_entry_source_row`).
  Its outputs are already fixed; its next top-k scores still feed later entries' done checks.
* Scores are float32 as in the kernel: log-probabilities summed in float32, a hypothesis scored
  float32(sum) / powf(len, length_penalty).
* Finalize: every running beam of an unfinished entry is added as a hypothesis (at full length);
  the best num_return_sequences, sorted by score, are returned, padded with pad_token_id.
* Greedy: processors on raw logits, argmax; a finished sequence continues with pad.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

NextLogits = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SearchFlags:
    """Flags shared by the graph's inputs/attributes and `generate` (absolute lengths, prompt included)."""

    max_length: int
    min_length: int = 0
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    early_stopping: bool = False


@dataclass
class SearchOutput:
    sequences: torch.Tensor  # int64 [batch, nrs, max_length], padded with pad_token_id
    scores: torch.Tensor | None  # [batch, nrs] for beam search


class ModelLogits:
    """Last-position logits of a causal LM, recomputed from scratch (simple, and cache-free).

    `after_copied_past` serves the one place where onnxruntime's state is not a plain sequence: a row
    whose past key/values were computed for another row (see `ort_beam_search`).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False)
        return out.logits[:, -1, :].float()

    @torch.no_grad()
    def after_copied_past(self, past_ids: torch.Tensor, past_mask: torch.Tensor, past_positions: torch.Tensor,
                          token: torch.Tensor, attention_mask: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Logits for `token` [rows] at `position` [rows], attending with `attention_mask` [rows, past + 1] over
        key/values computed for `past_ids` with `past_mask` and `past_positions` (another row's)."""
        first = self.model(input_ids=past_ids, attention_mask=past_mask, position_ids=past_positions, use_cache=True)
        # transformers 5.24 renamed the cache keyword and output to `cache` (the old name goes in 5.40).
        keyword = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        past = getattr(first, "cache", None)
        past = first.past_key_values if past is None else past
        out = self.model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position[:, None],
                         use_cache=True, **{keyword: past})
        return out.logits[:, -1, :].float()


def next_logits_from_model(model: torch.nn.Module) -> ModelLogits:
    return ModelLogits(model)


def _process(scores: torch.Tensor, sequences: torch.Tensor, flags: SearchFlags, eos: int) -> torch.Tensor:
    scores = scores.clone()
    if flags.repetition_penalty != 1.0:
        for row in range(scores.shape[0]):
            seen = torch.unique(sequences[row])
            values = scores[row, seen]
            scores[row, seen] = torch.where(values < 0, values * flags.repetition_penalty,
                                            values / flags.repetition_penalty)
    n = flags.no_repeat_ngram_size
    if n > 0 and sequences.shape[1] + 1 >= n:
        for row in range(scores.shape[0]):
            tokens = sequences[row].tolist()
            prefix = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
            for i in range(len(tokens) - n + 1):
                if tuple(tokens[i:i + n - 1]) == prefix:
                    scores[row, tokens[i + n - 1]] = float("-inf")
    if sequences.shape[1] < flags.min_length:
        scores[:, eos] = float("-inf")
    return scores


@dataclass
class _Hypotheses:
    num_beams: int
    length_penalty: float
    early_stopping: bool
    items: list[tuple[float, list[int]]]

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        score = _normalised(sum_logprobs, len(tokens), self.length_penalty)
        # A new hypothesis goes after kept ones with an equal score, and must beat the worst to enter a full set.
        if len(self.items) < self.num_beams or score > self.items[-1][0]:
            self.items.append((score, tokens))
            self.items.sort(key=lambda item: -item[0])
            del self.items[self.num_beams:]

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        if len(self.items) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        return self.items[-1][0] >= _normalised(best_sum_logprobs, cur_len, self.length_penalty)


def _normalised(sum_logprobs: float, length: int, length_penalty: float) -> float:
    """BeamHypotheses' `sum_logprobs / pow(float(length), length_penalty)`, in float32 like the kernel."""
    return float(np.float32(sum_logprobs) / np.power(np.float32(length), np.float32(length_penalty)))


def done_check_best_score(next_scores: torch.Tensor, batch_index: int, num_beams: int) -> float:
    """The best candidate score onnxruntime compares batch entry `batch_index`'s worst hypothesis with.

    `next_scores` is the operator's top-k buffer, [batch, 2 * num_beams] (sorted per row). The kernel
    takes `max(next_scores.flat[batch_index * num_beams : batch_index * num_beams + 2 * num_beams])`
    (beam_search_scorer.cc, BeamSearchScorer::Process: `next_scores.subspan(batch * num_beams_, top_k)`
    with top_k = 2 * num_beams_), a window that starts at row batch_index / 2: entry 1 is judged by the
    second half of entry 0's row and the first half of its own, entry 2 by entry 1's row, and so on.
    An entry whose window holds worse candidates than its own can stop early, keeping hypotheses that a
    longer search would have beaten; one whose window holds better candidates searches on.
    """
    flat = next_scores.reshape(-1)
    start = batch_index * num_beams
    return float(flat[start:start + 2 * num_beams].max())


def kernel_positions(input_ids: torch.Tensor, pad_token_id: int, length: int) -> torch.Tensor:
    """Position ids as the GPT subgraph gets them, for `length` tokens (prompt included), per prompt row.

    CreateGptInputs (generation_device_helper.cc) numbers the prompt by its tokens, not by the
    attention mask it is given: a token equal to pad_token_id gets position 0 and is not counted,
    every other one the count of non-pad tokens before it; generated tokens continue from that count,
    one per step. Where padding is exactly the pad tokens this is `ort_position_ids(mask)`; a prompt
    that contains the pad id as a real, attended token (GPT-2, where pad = eos = <|endoftext|>) is
    numbered differently from transformers.
    """
    real = (input_ids != pad_token_id).to(torch.int64)
    prompt = ((real.cumsum(-1) - 1) * real).clamp(min=0)
    generated = real.sum(-1, keepdim=True) + torch.arange(length - input_ids.shape[1])
    return torch.cat([prompt, generated], dim=-1)


def done_entry_source_row(batch_index: int, num_beams: int) -> int:
    """The row whose sequence and past key/values a done entry's beams take at the next step.

    BeamSearchScorer::Process pads a done entry with `next_beam_indices_[batch * num_beams_ + j] = 0`,
    while every other entry's indices are global (`batch * num_beams_ + next_index`): so beam index 0
    is global row 0, entry 0's first beam, whatever the entry.
    """
    return 0


def _logits_of_copied_rows(next_logits: NextLogits, logits: torch.Tensor, copies: list[tuple[int, int]],
                           sequences: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits of rows that took another row's past at the last step, as the kernel computes them.

    For (row, source): the past key/values were computed for the source row, with its mask and
    positions; the new token attends over them with the row's own mask, at the row's own position. A
    cache-free recompute of the same tokens uses the row's own mask for the whole past: the same thing
    only when the two masks agree, so only the others are recomputed.
    """
    after_copied_past = getattr(next_logits, "after_copied_past", None)
    differing = [(row, source) for row, source in copies if not torch.equal(mask[row], mask[source])]
    if not differing or after_copied_past is None:
        return logits
    rows = torch.tensor([row for row, _ in differing])
    sources = torch.tensor([source for _, source in differing])
    logits = logits.clone()
    logits[rows] = after_copied_past(sequences[rows, :-1], mask[sources, :-1], positions[sources, :-1],
                                     sequences[rows, -1], mask[rows], positions[rows, -1])
    return logits


@torch.no_grad()
def ort_beam_search(
    next_logits: NextLogits, input_ids: torch.Tensor, attention_mask: torch.Tensor, flags: SearchFlags,
    eos_token_id: int, pad_token_id: int,
) -> SearchOutput:
    batch, k = input_ids.shape[0], flags.num_beams
    sequences = input_ids.to(torch.int64).repeat_interleave(k, dim=0)
    # Per row and never reordered, like the kernel's position counters (beams of one entry share them).
    all_positions = kernel_positions(sequences, pad_token_id, flags.max_length)
    mask = attention_mask.to(torch.int64).repeat_interleave(k, dim=0)
    beam_scores = torch.zeros(batch, k)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    hyps = [_Hypotheses(k, flags.length_penalty, flags.early_stopping, []) for _ in range(batch)]
    done = [False] * batch
    copies: list[tuple[int, int]] = []  # (row, source row) for done entries' rows at the last step (see below)
    while sequences.shape[1] < flags.max_length:
        cur_len = sequences.shape[1]
        positions = all_positions[:, :cur_len]
        logits = next_logits(sequences, mask, positions)
        logits = _logits_of_copied_rows(next_logits, logits, copies, sequences, mask, positions)
        scores = _process(torch.log_softmax(logits, dim=-1), sequences, flags, eos_token_id)
        scores = scores + beam_scores[:, None]
        vocab = scores.shape[-1]
        flat = scores.view(batch, k * vocab)
        top_scores, top_ids = torch.sort(flat, dim=-1, descending=True, stable=True)
        top_scores, top_ids = top_scores[:, : 2 * k], top_ids[:, : 2 * k]
        next_scores = torch.zeros(batch, k)
        next_tokens = torch.full((batch, k), pad_token_id, dtype=torch.int64)
        next_beams = torch.zeros(batch, k, dtype=torch.int64)
        was_done = list(done)
        for b in range(batch):
            if done[b]:
                continue
            taken = 0
            for rank in range(2 * k):
                beam, token = divmod(int(top_ids[b, rank]), vocab)
                score = float(top_scores[b, rank])
                if token == eos_token_id:
                    if rank >= k:
                        continue
                    hyps[b].add(sequences[b * k + beam].tolist(), score)
                else:
                    next_scores[b, taken], next_tokens[b, taken], next_beams[b, taken] = score, token, beam
                    taken += 1
                if taken == k:
                    break
            done[b] = hyps[b].is_done(done_check_best_score(top_scores, b, k), cur_len)
        source = torch.arange(batch)[:, None] * k + next_beams
        # A done entry's beams get beam index 0, and the kernel's indices are global (batch * num_beams +
        # beam elsewhere): its rows take global row 0's sequence and past key/values, not their own. Only
        # their top-k scores are ever read again, by a later entry's done check (done_check_best_score).
        for b in range(batch):
            if was_done[b]:
                source[b] = done_entry_source_row(b, k)
        copies = [(b * k + j, int(source[b, j])) for b in range(batch) if was_done[b] for j in range(k)]
        sequences = torch.cat([sequences[source.view(-1)], next_tokens.view(-1, 1)], dim=1)
        # The attention mask (and position counters) are per row and never reordered: beams of one entry
        # share them, and a copied row keeps its own.
        mask = torch.cat([mask, torch.ones(batch * k, 1, dtype=torch.int64)], dim=1)
        beam_scores = next_scores.view(-1)
        if all(done):
            break
    out = torch.full((batch, flags.num_return_sequences, flags.max_length), pad_token_id, dtype=torch.int64)
    out_scores = torch.zeros(batch, flags.num_return_sequences)
    for b in range(batch):
        if not done[b]:
            for beam in range(k):
                hyps[b].add(sequences[b * k + beam].tolist(), float(beam_scores[b * k + beam]))
        for r, (score, tokens) in enumerate(hyps[b].items[: flags.num_return_sequences]):
            out[b, r, : len(tokens)] = torch.tensor(tokens)
            out_scores[b, r] = score
    return SearchOutput(out, out_scores)


@torch.no_grad()
def ort_greedy_search(
    next_logits: NextLogits, input_ids: torch.Tensor, attention_mask: torch.Tensor, flags: SearchFlags,
    eos_token_id: int, pad_token_id: int,
) -> SearchOutput:
    sequences = input_ids.to(torch.int64)
    mask = attention_mask.to(torch.int64)
    finished = torch.zeros(sequences.shape[0], dtype=torch.bool)
    all_positions = kernel_positions(sequences, pad_token_id, flags.max_length)
    while sequences.shape[1] < flags.max_length and not bool(finished.all()):
        logits = next_logits(sequences, mask, all_positions[:, : sequences.shape[1]])
        tokens = _process(logits, sequences, flags, eos_token_id).argmax(dim=-1)
        tokens = torch.where(finished, torch.full_like(tokens, pad_token_id), tokens)
        finished |= tokens == eos_token_id
        sequences = torch.cat([sequences, tokens[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(tokens[:, None])], dim=1)
    out = torch.full((sequences.shape[0], 1, flags.max_length), pad_token_id, dtype=torch.int64)
    out[:, 0, : sequences.shape[1]] = sequences
    return SearchOutput(out, None)
