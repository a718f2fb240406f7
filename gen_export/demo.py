"""Small, deterministic BioGPT checkpoints built from the corpus genexport ships.

There is no model hub here, and random-weight models have near-tied next-token logits, which makes
token-parity tests meaningless (any rounding flips the argmax). So demo models are trained for a few
seconds on `data/corpus.txt`: their next-token distributions are peaked and they end sentences with
EOS, which is exactly where beam-search implementations part. They are for tests and demos only.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import sacremoses
import torch

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as BioGptTokenizer expects
DEMO_VERSION = 1


@dataclass(frozen=True)
class DemoSize:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    num_merges: int
    train_steps: int


DEMO_SIZES: dict[str, DemoSize] = {
    "tiny": DemoSize(64, 2, 4, 128, 128, num_merges=400, train_steps=300),
    "small": DemoSize(96, 3, 4, 192, 160, num_merges=400, train_steps=300),
    # A different tokenizer (fewer merges -> another vocabulary size), shape and head count: the
    # "checkpoint the exporter has never seen" of the tests.
    "wide": DemoSize(128, 2, 8, 256, 256, num_merges=250, train_steps=250),
}

#: Prefixes of corpus sentences: most continue with a slot word, a period and EOS.
DEMO_PROMPTS: tuple[str, ...] = (
    "the patient was treated with",
    "mutations in tp53 cause",
    "expression of egfr was reduced in patients with",
    "the drug inhibits",
    "loss of pten leads to",
    "metformin is used to treat",
    "the results suggest that",
    "brca1 is",
)


def _words(corpus: Path) -> list[list[str]]:
    moses = sacremoses.MosesTokenizer(lang="en")
    lines = [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [moses.tokenize(line, aggressive_dash_splits=True, return_str=False, escape=True) for line in lines]


def learn_bpe(corpus: Path, num_merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Classic BPE over Moses tokens with `</w>` word ends, the format BioGptTokenizer reads."""
    counts = collections.Counter(word for sentence in _words(corpus) for word in sentence)
    vocab = {(*tuple(word[:-1]), word[-1] + "</w>"): n for word, n in counts.items()}
    symbols = {s for word in vocab for s in word}
    # Every character both inside and at the end of a word, so no corpus word is ever unknown.
    for word in counts:
        symbols.update(word)
        symbols.update(ch + "</w>" for ch in word)
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, n in vocab.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])  # sorted first: deterministic ties
        merges.append(best)
        merged = best[0] + best[1]
        symbols.add(merged)
        new_vocab = {}
        for word, n in vocab.items():
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_vocab[tuple(out)] = n
        vocab = new_vocab
    return [*SPECIAL_TOKENS, *sorted(symbols)], merges


def build_tokenizer(out_dir: Path, corpus: Path | None = None, num_merges: int = 400) -> Path:
    """Write vocab.json + merges.txt (+ configs) that `BioGptTokenizer.from_pretrained` loads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens, merges = learn_bpe(corpus or CORPUS, num_merges)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("".join(f"{a} {b} 1\n" for a, b in merges), encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BioGptTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": 1024,
    }, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
    }, indent=2))
    return out_dir


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic reductions, and no fight with the caller's threads
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_checkpoint(
    out_dir: Path, size: str = "tiny", seed: int = 0, train_steps: int | None = None, corpus: Path | None = None,
    num_merges: int | None = None,
) -> Path:
    """Tokenizer + BioGptForCausalLM trained briefly on the corpus, saved with save_pretrained."""
    from transformers import BioGptConfig, BioGptForCausalLM, BioGptTokenizer

    spec = DEMO_SIZES[size]
    corpus = corpus or CORPUS
    steps = spec.train_steps if train_steps is None else train_steps
    build_tokenizer(out_dir, corpus, spec.num_merges if num_merges is None else num_merges)
    tokenizer = BioGptTokenizer.from_pretrained(out_dir)
    lines = [line.strip() for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    # BioGptTokenizer prepends </s>; appending </s> teaches the model to stop after a sentence.
    encoded = [tokenizer(line)["input_ids"] + [tokenizer.eos_token_id] for line in lines]
    width = max(map(len, encoded))
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
    mask = (ids != tokenizer.pad_token_id).long()
    labels = ids.masked_fill(mask == 0, -100)

    config = BioGptConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads, intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        use_cache=True,
    )
    with _single_thread():
        torch.manual_seed(seed)
        model = BioGptForCausalLM(config)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        generator = torch.Generator().manual_seed(seed)
        loss = torch.tensor(float("nan"))
        for _ in range(steps):
            batch = torch.randint(0, len(encoded), (32,), generator=generator)
            loss = model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels[batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
    model.generation_config.pad_token_id = 1
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "genexport_demo.json").write_text(json.dumps({
        "demo": True, "size": size, "seed": seed, "train_steps": steps, "final_loss": round(float(loss.detach()), 4),
        "shape": asdict(spec), "trained_with": training_versions_key(),
    }, indent=2))
    return out_dir


#: Demo and fixture checkpoints as trained on transformers 4.57.6 / torch 2.13.0 (scripts/build_demo_data.py),
#: shipped so both transformers lines use the same weights: training itself is not reproducible across lines
#: (BioGPT on 4.57 draws `torch.rand` for layerdrop even at layerdrop 0, which shifts every later dropout draw;
#: OPT's differs too), and a checkpoint that differs per line would make the lines' parity tables incomparable.
SHIPPED_DIR = Path(__file__).parent / "data" / "demo"


def _version_hash() -> str:
    digest = hashlib.sha256(CORPUS.read_bytes())
    digest.update(json.dumps({k: asdict(v) for k, v in DEMO_SIZES.items()}, sort_keys=True).encode())
    digest.update(str(DEMO_VERSION).encode())
    return digest.hexdigest()[:12]


def training_versions_key() -> str:
    """What shapes a freshly trained checkpoint besides genexport's own inputs: torch's and transformers' versions."""
    from importlib import metadata

    return f"torch{metadata.version('torch')}-tf{metadata.version('transformers')}".replace("+", "_")


def shipped_checkpoint(name: str) -> Path | None:
    """The shipped folder for `name` (biogpt-tiny, biogpt-small, biogpt-wide, gpt2, opt), or None."""
    folder = SHIPPED_DIR / name
    return folder if (folder / "genexport_demo.json").is_file() else None


def _files_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cached_or_shipped(name: str, seed: int, version_hash: str, build: Callable[[Path], object]) -> Path:
    """Seed 0: a cache copy of the shipped checkpoint (the same on every line). Other seeds: trained, cached
    under a key that includes the torch and transformers versions, since those change the trained weights."""
    shipped = shipped_checkpoint(name) if seed == 0 else None
    if shipped is not None:
        target = cache_root() / f"{name}-shipped-{_files_hash(shipped)}"
        return build_cached(target, lambda staging: shutil.copytree(shipped, staging, dirs_exist_ok=True))
    target = cache_root() / f"{name}-seed{seed}-{version_hash}-{training_versions_key()}"
    return build_cached(target, build)


def cache_root() -> Path:
    return Path(os.environ.get("GENEXPORT_CACHE", Path.home() / ".cache" / "genexport")) / "demo"


def cached_checkpoint(size: str = "tiny", seed: int = 0) -> Path:
    """The shipped demo checkpoint (seed 0) or one trained once into the cache (temp folder then rename)."""
    return cached_or_shipped(f"biogpt-{size}", seed, _version_hash(),
                             lambda staging: build_checkpoint(staging, size=size, seed=seed))


def build_cached(target: Path, build: Callable[[Path], object]) -> Path:
    """Reuse `target` if complete; else build into a temp folder beside it and rename it into place.

    A crash never leaves a half-written cache entry, and when two processes race the first rename wins.
    """
    if (target / "genexport_demo.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
