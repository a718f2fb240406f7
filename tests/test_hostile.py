"""Hostile and broken input, table-driven: every case must end in one `error: ... Fix: ...` line and exit 2,
with no traceback, no output written, no staging or scratch folder left, and every input folder unchanged.

Cases run the CLI in-process (typer's CliRunner) on a fresh copy of the tiny demo BioGPT; scratch folders go
to a per-case TMPDIR so "nothing left behind" is checked exactly. SIGTERM and concurrent runs need real
processes and have their own tests below.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gen_export.artifacts import MANIFEST_NAME, reserved_outputs, staged_output
from gen_export.cli import app
from gen_export.errors import GenExportError

#: A progress line of the CLI's step display ("  load checkpoint   0:00:00"), the only other thing on stderr.
PROGRESS_LINE = re.compile(r"^.*\d+:\d\d:\d\d\s*$")


def folder_digest(folder: Path) -> str:
    """Names, link targets and contents of everything under `folder` (links are not followed)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode())
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def tiny_export(tiny_biogpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real beam export of the demo model (parity is proven elsewhere), read by the `triton`/`info` cases."""
    from gen_export.generation import export_generation

    return export_generation(tiny_biogpt, tmp_path_factory.mktemp("export") / "out", parity=False).output


@pytest.fixture(scope="module")
def tiny_st_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT laid out as a sentence-transformers folder (modules.json, pooling config)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from gen_export.embed import default_model_dir

    folder = tmp_path_factory.mktemp("st-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    BertTokenizerFast.from_pretrained(default_model_dir()).save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


@dataclass
class Ctx:
    """One case's world: a private copy of the model, the output path, folders that must not change."""

    tmp: Path
    model: Path
    out: Path
    monkeypatch: pytest.MonkeyPatch
    source_export: Path
    source_encoder: Path
    watched: list[Path] = field(default_factory=list)
    #: Outputs that must not exist afterwards (OUT unless the case made it beforehand, --triton-repo, ...).
    absent: list[Path] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)

    def config(self, **changes: object) -> None:
        path = self.model / "config.json"
        config = json.loads(path.read_text())
        config.update(changes)
        path.write_text(json.dumps(config))

    def value(self, key: str) -> int:
        return int(json.loads((self.model / "config.json").read_text())[key])

    def export(self) -> Path:
        target = self.tmp / "export"
        if not target.exists():
            shutil.copytree(self.source_export, target)
            self.watched.append(target)
        return target

    def encoder(self) -> Path:
        target = self.tmp / "encoder"
        if not target.exists():
            shutil.copytree(self.source_encoder, target)
            self.watched.append(target)
        return target

    def beam(self, *extra: str) -> list[str]:
        return ["beam", str(self.model), "-o", str(self.out), "--no-parity", *extra]

    def existing_out(self, *files: str) -> None:
        """OUT exists beforehand (with `files`): it must be left exactly as it was."""
        self.out.mkdir(parents=True, exist_ok=True)
        for name in files:
            (self.out / name).write_text(f"user data: {name}")
        self.watched.append(self.out)
        self.absent.remove(self.out)


def _move_model(ctx: Ctx, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    ctx.watched.remove(ctx.model)
    shutil.move(str(ctx.model), target)
    ctx.model = target
    ctx.watched.append(target)


# --- case setups: each returns the CLI arguments; the table below pairs it with the expected words -----------

def out_is_model(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    ctx.out = ctx.model
    return ctx.beam("--force")


def decoder_out_is_model(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    return ["decoder", str(ctx.model), "-o", str(ctx.model), "--force"]


def out_is_a_link_to_model(ctx: Ctx) -> list[str]:
    ctx.out.symlink_to(ctx.model)
    ctx.absent.remove(ctx.out)
    ctx.after.append(lambda: None if ctx.out.is_symlink() else pytest.fail("the link was replaced"))
    return ctx.beam("--force")


def out_contains_model(ctx: Ctx) -> list[str]:
    _move_model(ctx, ctx.tmp / "parent" / "model")
    ctx.absent.remove(ctx.out)
    ctx.out = ctx.tmp / "parent"
    return ctx.beam("--force")


def out_is_cwd(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    ctx.out = ctx.tmp / "work"
    ctx.out.mkdir()
    (ctx.out / "notes.txt").write_text("mine")
    ctx.watched.append(ctx.out)
    ctx.monkeypatch.chdir(ctx.out)
    return ["beam", str(ctx.model), "-o", ".", "--no-parity", "--force"]


def out_contains_cwd(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    ctx.out = ctx.tmp / "a"
    (ctx.out / "b").mkdir(parents=True)
    ctx.watched.append(ctx.out)
    ctx.monkeypatch.chdir(ctx.out / "b")
    return ctx.beam("--force")


def out_is_home(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    ctx.out = ctx.tmp / "home"
    ctx.out.mkdir()
    (ctx.out / ".bashrc").write_text("# mine")
    ctx.watched.append(ctx.out)
    ctx.monkeypatch.setenv("HOME", str(ctx.out))
    return ctx.beam("--force")


def out_contains_home(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    ctx.out = ctx.tmp / "users"
    (ctx.out / "me").mkdir(parents=True)
    (ctx.out / "me" / ".profile").write_text("# mine")
    ctx.watched.append(ctx.out)
    ctx.monkeypatch.setenv("HOME", str(ctx.out / "me"))
    return ctx.beam("--force")


def out_is_root(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    ctx.out = Path("/")
    return ctx.beam("--force")


def force_on_foreign_folder(ctx: Ctx) -> list[str]:
    ctx.existing_out("thesis.tex")
    return ctx.beam("--force")


def nonempty_without_force(ctx: Ctx) -> list[str]:
    ctx.existing_out(MANIFEST_NAME)
    return ctx.beam()


def out_is_a_file(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    ctx.out.write_text("a file")
    ctx.after.append(lambda: None if ctx.out.read_text() == "a file" else pytest.fail("OUT file changed"))
    return ctx.beam("--force")


def triton_repo_is_out(ctx: Ctx) -> list[str]:
    return ctx.beam("--triton-repo", str(ctx.out), "--force")


def triton_repo_inside_out(ctx: Ctx) -> list[str]:
    return ctx.beam("--triton-repo", str(ctx.out / "repo"))


def out_inside_triton_repo(ctx: Ctx) -> list[str]:
    ctx.absent.remove(ctx.out)
    ctx.out = ctx.tmp / "repo" / "out"
    ctx.absent.append(ctx.tmp / "repo")
    return ctx.beam("--triton-repo", str(ctx.tmp / "repo"))


def triton_repo_foreign_with_force(ctx: Ctx) -> list[str]:
    """Checked with OUT before any work: OUT is never written when the repository folder is refused."""
    repo = ctx.tmp / "repo"
    repo.mkdir()
    (repo / "my_model").mkdir()
    ctx.watched.append(repo)
    return ctx.beam("--triton-repo", str(repo), "--force")


def triton_repo_is_model(ctx: Ctx) -> list[str]:
    return ctx.beam("--triton-repo", str(ctx.model), "--force")


def out_locked_by_another_run(ctx: Ctx) -> list[str]:
    handle = (ctx.tmp / ".out.lock").open("w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    ctx.after.append(handle.close)
    ctx.after.append(lambda: (ctx.tmp / ".out.lock").unlink())
    return ctx.beam()


def triton_name_traversal(ctx: Ctx) -> list[str]:
    ctx.absent += [ctx.tmp / "repo", ctx.tmp / "x"]
    return ["triton", str(ctx.export()), str(ctx.tmp / "repo" / "inner"), "--name", "../../x", "--backend", "python"]


def triton_name_slash(ctx: Ctx) -> list[str]:
    ctx.absent.append(ctx.tmp / "repo")
    return ["triton", str(ctx.export()), str(ctx.tmp / "repo"), "--name", "a/b"]


def triton_repo_is_export(ctx: Ctx) -> list[str]:
    return ["triton", str(ctx.export()), str(ctx.export()), "--force"]


def triton_repo_inside_export(ctx: Ctx) -> list[str]:
    return ["triton", str(ctx.export()), str(ctx.export() / "repo")]


def _manifest(ctx: Ctx, text: str) -> Path:
    (ctx.export() / MANIFEST_NAME).write_text(text)
    return ctx.export()


def triton_manifest_garbage(ctx: Ctx) -> list[str]:
    return ["triton", str(_manifest(ctx, "{not json")), str(ctx.out)]


def triton_manifest_incomplete(ctx: Ctx) -> list[str]:
    return ["triton", str(_manifest(ctx, json.dumps({"command": "beam"}))), str(ctx.out)]


def triton_manifest_unservable_defaults(ctx: Ctx) -> list[str]:
    manifest = json.loads((ctx.export() / MANIFEST_NAME).read_text())
    manifest["settings"]["generation_defaults"]["num_return_sequences"] = 0
    return ["triton", str(_manifest(ctx, json.dumps(manifest))), str(ctx.out)]


def info_manifest_garbage(ctx: Ctx) -> list[str]:
    return ["info", str(_manifest(ctx, "\xff\xfe garbage"))]


def info_manifest_list(ctx: Ctx) -> list[str]:
    return ["info", str(_manifest(ctx, "[]"))]


def info_no_manifest(ctx: Ctx) -> list[str]:
    return ["info", str(ctx.model)]


def triton_zero_text_bytes(ctx: Ctx) -> list[str]:
    return ["triton", str(ctx.export()), str(ctx.out), "--max-text-bytes", "0"]


def _disk_full(ctx: Ctx) -> None:
    def copy2(src: object, dst: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    ctx.monkeypatch.setattr(shutil, "copy2", copy2)


def triton_disk_full(ctx: Ctx) -> list[str]:
    args = ["triton", str(ctx.export()), str(ctx.out), "--backend", "python"]
    _disk_full(ctx)
    return args


def beam_disk_full(ctx: Ctx) -> list[str]:
    _disk_full(ctx)
    return ctx.beam()


# Checkpoints whose config, weights or tokenizer are broken or hostile.

def config_is_a_list(ctx: Ctx) -> list[str]:
    (ctx.model / "config.json").write_text("[]")
    return ctx.beam()


def config_not_json(ctx: Ctx) -> list[str]:
    (ctx.model / "config.json").write_text("{'single': 'quotes'}")
    return ctx.beam()


def architectures_a_string(ctx: Ctx) -> list[str]:
    ctx.config(architectures="BioGptForCausalLM")
    return ctx.beam()


def _config_case(**changes: object) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        ctx.config(**changes)
        return ctx.beam()

    return setup


def heads_not_dividing_hidden(ctx: Ctx) -> list[str]:
    hidden = ctx.value("hidden_size")
    ctx.config(num_attention_heads=next(h for h in range(3, hidden) if hidden % h))
    return ctx.beam()


def one_layer_more_than_weights(ctx: Ctx) -> list[str]:
    ctx.config(num_hidden_layers=ctx.value("num_hidden_layers") + 1)
    return ctx.beam()


def one_layer_fewer_than_weights(ctx: Ctx) -> list[str]:
    ctx.config(num_hidden_layers=ctx.value("num_hidden_layers") - 1)
    return ctx.beam()


def wider_than_weights(ctx: Ctx) -> list[str]:
    ctx.config(hidden_size=ctx.value("hidden_size") * 2)
    return ctx.beam()


def eos_outside_vocabulary(ctx: Ctx) -> list[str]:
    ctx.config(eos_token_id=ctx.value("vocab_size") + 5)
    return ctx.beam()


def safetensors_truncated(ctx: Ctx) -> list[str]:
    weights = ctx.model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return ctx.beam()


def safetensors_garbage(ctx: Ctx) -> list[str]:
    (ctx.model / "model.safetensors").write_bytes(os.urandom(4096))
    return ctx.beam()


def safetensors_empty(ctx: Ctx) -> list[str]:
    (ctx.model / "model.safetensors").write_bytes(b"")
    return ctx.beam()


class _Payload:
    """Unpickling this runs `touch MARKER`: weights-only loading must refuse it without running it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def pickle_bin(ctx: Ctx) -> list[str]:
    (ctx.model / "model.safetensors").unlink()
    marker = ctx.tmp / "pwned"
    with (ctx.model / "pytorch_model.bin").open("wb") as handle:
        pickle.dump({"biogpt.embed_tokens.weight": _Payload(marker)}, handle)
    ctx.after.append(lambda: None if not marker.exists() else pytest.fail("the pickle was executed"))
    return ctx.beam()


def merges_empty(ctx: Ctx) -> list[str]:
    (ctx.model / "merges.txt").write_text("#version: 0.2\n")
    return ctx.beam()


def vocab_not_json(ctx: Ctx) -> list[str]:
    (ctx.model / "vocab.json").write_text('{"the": 4,')
    return ctx.beam()


def vocab_a_list(ctx: Ctx) -> list[str]:
    (ctx.model / "vocab.json").write_text("[]")
    return ctx.beam()


def tokenizer_config_not_json(ctx: Ctx) -> list[str]:
    (ctx.model / "tokenizer_config.json").write_text("{")
    return ctx.beam()


def vocab_cannot_encode_prompts(ctx: Ctx) -> list[str]:
    (ctx.model / "vocab.json").write_text(json.dumps({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}))
    return ctx.beam()


def user_prompt_not_encodable(ctx: Ctx) -> list[str]:
    prompts = ctx.tmp / "prompts.txt"
    prompts.write_text("the patient was treated with\n\u6f22\u5b57\u304b\u306a\u4ea4\u3058\u308a\n")
    return ctx.beam("--prompts", str(prompts))


def tokenizer_link_outside(ctx: Ctx) -> list[str]:
    outside = ctx.tmp / "elsewhere" / "vocab.json"
    outside.parent.mkdir()
    shutil.move(str(ctx.model / "vocab.json"), outside)
    (ctx.model / "vocab.json").symlink_to(outside)
    return ctx.beam()


def tokenizer_link_to_etc_passwd(ctx: Ctx) -> list[str]:
    (ctx.model / "special_tokens_map.json").unlink(missing_ok=True)
    (ctx.model / "special_tokens_map.json").symlink_to("/etc/passwd")
    return ctx.beam()


# Numbers and files handed to the CLI.

def prompts_not_utf8(ctx: Ctx) -> list[str]:
    prompts = ctx.tmp / "prompts.txt"
    prompts.write_bytes(b"the patient \xff\xfe was\n")
    return ctx.beam("--prompts", str(prompts))


def prompts_blank(ctx: Ctx) -> list[str]:
    prompts = ctx.tmp / "prompts.txt"
    prompts.write_text("\n   \n")
    return ctx.beam("--prompts", str(prompts))


def _flags(command: str, *flags: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return [command, str(ctx.model), "-o", str(ctx.out), *flags]

    return setup


def embed_min_cosine_2(ctx: Ctx) -> list[str]:
    return ["embed", str(ctx.encoder()), "-o", str(ctx.out), "--min-cosine", "2"]


def st_modules_not_json(ctx: Ctx) -> list[str]:
    (ctx.encoder() / "modules.json").write_text("{")
    return ["embed", str(ctx.encoder()), "-o", str(ctx.out)]


def st_modules_a_dict(ctx: Ctx) -> list[str]:
    (ctx.encoder() / "modules.json").write_text("{}")
    return ["embed", str(ctx.encoder()), "-o", str(ctx.out)]


def st_pooling_path_escapes(ctx: Ctx) -> list[str]:
    modules = json.loads((ctx.encoder() / "modules.json").read_text())
    modules[1]["path"] = "../../../etc"
    (ctx.encoder() / "modules.json").write_text(json.dumps(modules))
    return ["embed", str(ctx.encoder()), "-o", str(ctx.out)]


def st_max_seq_length_negative(ctx: Ctx) -> list[str]:
    (ctx.encoder() / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": -5}))
    return ["embed", str(ctx.encoder()), "-o", str(ctx.out)]


def encoder_extra_layer(ctx: Ctx) -> list[str]:
    config = json.loads((ctx.encoder() / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (ctx.encoder() / "config.json").write_text(json.dumps(config))
    return ["embed", str(ctx.encoder()), "-o", str(ctx.out)]


CASES: list[tuple[str, Callable[[Ctx], list[str]], str]] = [
    # --force and output folders: never delete what is not genexport's.
    ("out-is-model", out_is_model, "is the folder it reads from"),
    ("decoder-out-is-model", decoder_out_is_model, "is the folder it reads from"),
    ("out-is-a-link-to-model", out_is_a_link_to_model, "is the folder it reads from"),
    ("out-contains-model", out_contains_model, "contains the folder it reads from"),
    ("out-is-cwd", out_is_cwd, "is the current folder"),
    ("out-contains-cwd", out_contains_cwd, "contains the current folder"),
    ("out-is-home", out_is_home, "is your home folder"),
    ("out-contains-home", out_contains_home, "contains your home folder"),
    ("out-is-root", out_is_root, "filesystem root"),
    ("force-on-foreign-folder", force_on_foreign_folder, "not written by genexport"),
    ("nonempty-without-force", nonempty_without_force, "already exists and is not empty"),
    ("out-is-a-file", out_is_a_file, "is not a folder"),
    ("triton-repo-is-out", triton_repo_is_out, "is the same folder as"),
    ("triton-repo-inside-out", triton_repo_inside_out, "contains"),
    ("out-inside-triton-repo", out_inside_triton_repo, "is inside"),
    ("triton-repo-is-model", triton_repo_is_model, "is the folder it reads from"),
    ("triton-repo-foreign-with-force", triton_repo_foreign_with_force, "repo was not written by genexport"),
    ("out-locked-by-another-run", out_locked_by_another_run, "another genexport run is writing"),
    ("triton-name-traversal", triton_name_traversal, "is not a plain model name"),
    ("triton-name-slash", triton_name_slash, "is not a plain model name"),
    ("triton-repo-is-export", triton_repo_is_export, "is the folder it reads from"),
    ("triton-repo-inside-export", triton_repo_inside_export, "lies inside the export"),
    ("triton-manifest-garbage", triton_manifest_garbage, "is not readable JSON"),
    ("triton-manifest-incomplete", triton_manifest_incomplete, "lacks what a Triton repository needs"),
    ("triton-manifest-unservable", triton_manifest_unservable_defaults, "cannot be served"),
    ("info-manifest-garbage", info_manifest_garbage, "is not readable JSON"),
    ("info-manifest-list", info_manifest_list, "not a genexport manifest"),
    ("info-no-manifest", info_no_manifest, "has no genexport.json"),
    ("triton-zero-text-bytes", triton_zero_text_bytes, "bytes per text is 0"),
    ("triton-disk-full", triton_disk_full, "no space left on device"),
    ("beam-disk-full", beam_disk_full, "no space left on device"),
    # Checkpoints: config sane before allocation, weights exactly what the config says, tokenizer usable.
    ("config-is-a-list", config_is_a_list, "not an object"),
    ("config-not-json", config_not_json, "not valid JSON"),
    ("architectures-a-string", architectures_a_string, "not a list of class names"),
    ("heads-zero", _config_case(num_attention_heads=0), "num_attention_heads is 0, outside"),
    ("layers-negative", _config_case(num_hidden_layers=-1), "num_hidden_layers is -1, outside"),
    ("hidden-float", _config_case(hidden_size=64.5), "not an integer"),
    ("vocab-string", _config_case(vocab_size="1000"), "not an integer"),
    ("layers-100000", _config_case(num_hidden_layers=100_000), "outside 1..512"),
    ("vocab-1e9", _config_case(vocab_size=10**9), "vocab_size is 1000000000, outside"),
    ("positions-1e9", _config_case(max_position_embeddings=10**9), "max_position_embeddings is 1000000000"),
    ("hidden-2^20", _config_case(hidden_size=2**20), "hidden_size is 1048576, outside"),
    ("memory-estimate", _config_case(num_hidden_layers=500, hidden_size=8192, num_attention_heads=64,
                                     intermediate_size=32768), "GB of memory"),
    ("heads-not-dividing-hidden", heads_not_dividing_hidden, "not divisible"),
    ("eos-outside-vocabulary", eos_outside_vocabulary, "eos_token_id"),
    ("one-layer-more-than-weights", one_layer_more_than_weights, "missing from the checkpoint"),
    ("one-layer-fewer-than-weights", one_layer_fewer_than_weights, "not used by the model"),
    ("wider-than-weights", wider_than_weights, "another shape"),
    ("safetensors-truncated", safetensors_truncated, "is truncated"),
    ("safetensors-garbage", safetensors_garbage, "no valid safetensors header"),
    ("safetensors-empty", safetensors_empty, "is empty"),
    ("pickle-bin", pickle_bin, "not a plain PyTorch weights file"),
    ("merges-empty", merges_empty, "holds no merges"),
    ("vocab-not-json", vocab_not_json, "vocab.json is not valid JSON"),
    ("vocab-a-list", vocab_a_list, "vocab.json is not a JSON object"),
    ("tokenizer-config-not-json", tokenizer_config_not_json, "tokenizer_config.json is not valid JSON"),
    ("vocab-cannot-encode-prompts", vocab_cannot_encode_prompts, "cannot encode it"),
    ("user-prompt-not-encodable", user_prompt_not_encodable, "cannot encode it"),
    ("tokenizer-link-outside", tokenizer_link_outside, "outside the model folder"),
    ("tokenizer-link-to-etc-passwd", tokenizer_link_to_etc_passwd, "outside the model folder"),
    ("encoder-extra-layer", encoder_extra_layer, "missing from the checkpoint"),
    ("st-modules-not-json", st_modules_not_json, "modules.json is not readable JSON"),
    ("st-modules-a-dict", st_modules_a_dict, "not a list"),
    ("st-pooling-path-escapes", st_pooling_path_escapes, "pooling module path"),
    ("st-max-seq-length-negative", st_max_seq_length_negative, "max_seq_length is -5"),
    # Numbers: NaN, inf and out-of-range values refused before any work.
    ("opset-1", _flags("decoder", "--opset", "1"), "opset is 1, must be in 14..20"),
    ("opset-999", _flags("decoder", "--opset", "999"), "opset is 999"),
    ("atol-inf", _flags("decoder", "--atol", "inf"), "atol is inf, not a finite number"),
    ("atol-nan", _flags("decoder", "--atol", "nan"), "atol is nan"),
    ("atol-negative", _flags("decoder", "--atol", "-1"), "atol is -1"),
    ("min-cosine-2", embed_min_cosine_2, "min_cosine is 2"),
    ("num-return-sequences-0", _flags("beam", "--num-return-sequences", "0", "--no-parity"),
     "num_return_sequences is 0"),
    ("min-length-negative", _flags("beam", "--min-length", "-5", "--no-parity"), "min_length is -5"),
    ("num-beams-0", _flags("beam", "--num-beams", "0"), "num_beams is 0"),
    ("num-beams-1000", _flags("beam", "--num-beams", "1000"), "num_beams is 1000"),
    ("max-length-1", _flags("beam", "--max-length", "1"), "max_length is 1"),
    ("length-penalty-nan", _flags("beam", "--length-penalty", "nan", "--no-parity"), "length_penalty is nan"),
    ("length-penalty-inf", _flags("beam", "--length-penalty", "inf"), "length_penalty is inf"),
    ("repetition-penalty-nan", _flags("beam", "--repetition-penalty", "nan"), "repetition_penalty is nan"),
    ("repetition-penalty-0", _flags("beam", "--repetition-penalty", "0"), "repetition_penalty is 0"),
    ("no-repeat-ngram-negative", _flags("beam", "--no-repeat-ngram-size", "-1"), "no_repeat_ngram_size is -1"),
    ("temperature-nan", _flags("beam", "--search", "sampling", "--temperature", "nan"), "temperature is nan"),
    ("top-p-0", _flags("beam", "--search", "sampling", "--top-p", "0"), "top_p is 0"),
    ("prompts-not-utf8", prompts_not_utf8, "not UTF-8"),
    ("prompts-blank", prompts_blank, "has no prompts"),
    ("prompts-missing", _flags("beam", "--prompts", "/nonexistent/prompts.txt"), "does not exist"),
]


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "setup", "needle"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input(name: str, setup: Callable[[Ctx], list[str]], needle: str, tiny_biogpt: Path,
                       tiny_export: Path, tiny_st_bert: Path, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model = tmp_path / "model"
    shutil.copytree(tiny_biogpt, model)
    ctx = Ctx(tmp=tmp_path, model=model, out=tmp_path / "out", monkeypatch=monkeypatch,
              source_export=tiny_export, source_encoder=tiny_st_bert, watched=[model], absent=[tmp_path / "out"])
    args = setup(ctx)
    before = {path: folder_digest(path) for path in ctx.watched}
    parents = {p.parent for p in [*ctx.absent, *ctx.watched] if p != Path("/")}
    entries_before = {parent: set(parent.iterdir()) if parent.is_dir() else set() for parent in parents}

    result = CliRunner().invoke(app, args)

    monkeypatch.undo()  # shutil.copy2 and friends back before checking
    stderr = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "Fix:" in errors[0], stderr
    assert needle in errors[0], stderr
    others = [line for line in stderr.splitlines() if line.strip() and not line.startswith("error:")]
    assert all(PROGRESS_LINE.match(line) for line in others), stderr
    for path in ctx.absent:
        assert not path.exists(), f"{path} was written"
    for path, digest in before.items():
        assert folder_digest(path) == digest, f"{path} changed"
    for parent, entries in entries_before.items():  # no staging, backup or lock folder left beside an output
        left = set(parent.iterdir()) - entries if parent.is_dir() else set()
        assert not {p for p in left if p.name.startswith(".")}, left
    assert not _scratch_left(scratch), _scratch_left(scratch)  # no $TMPDIR/genexport-* left
    for check in ctx.after:
        check()


# --- the library: types at the boundary, --force on genexport's own folders, changes during a run --------------

def test_library_refuses_a_str_where_prompts_are_expected(tiny_biogpt: Path, tmp_path: Path) -> None:
    from gen_export.generation import export_generation

    with pytest.raises(TypeError, match=r"sequence of strings.*wrap a single prompt"):
        export_generation(tiny_biogpt, tmp_path / "out", prompts="some text")
    with pytest.raises(TypeError, match="force must be a bool"):
        export_generation(tiny_biogpt, tmp_path / "out", force="yes")
    with pytest.raises(TypeError, match=r"output must be a str or pathlib\.Path"):
        export_generation(tiny_biogpt, 42)
    assert not (tmp_path / "out").exists()


def _genexport_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / MANIFEST_NAME).write_text(json.dumps({"command": "beam"}))
    (path / "old.onnx").write_text("old")
    return path


def test_force_replaces_a_genexport_folder_and_takes_no_lock_file_with_it(tmp_path: Path) -> None:
    out = _genexport_folder(tmp_path / "out")
    with staged_output(out, force=True) as staging:
        (staging / "new.onnx").write_text("new")
        assert (tmp_path / ".out.lock").exists()  # held during the run
    assert sorted(p.name for p in out.iterdir()) == ["new.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # lock, staging and backup all gone


def test_a_file_that_appears_in_out_during_the_run_is_not_deleted(tmp_path: Path) -> None:
    out = _genexport_folder(tmp_path / "out")
    with pytest.raises(GenExportError, match="changed while genexport was writing"), \
            staged_output(out, force=True) as staging:
        (staging / "new.onnx").write_text("new")
        (out / "results.csv").write_text("written by someone else meanwhile")
    assert (out / "results.csv").read_text() == "written by someone else meanwhile"
    assert (out / "old.onnx").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_out_that_appears_during_the_run_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(GenExportError, match="changed while genexport was writing"), \
            staged_output(out, force=False) as staging:
        (staging / "new.onnx").write_text("new")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_parent_folders_created_for_a_failed_run_are_removed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="export failed"), \
            staged_output(tmp_path / "new" / "deeper" / "out", force=False):
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []
    with staged_output(tmp_path / "new" / "out", force=False) as staging:  # a successful run keeps them
        (staging / "a").write_text("a")
    assert (tmp_path / "new" / "out" / "a").is_file()


def test_a_read_only_parent_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated (tests may run as root, who writes anywhere): the lock file cannot be created."""
    real_open = os.open

    def open_refusing_locks(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_refusing_locks)
    with pytest.raises(GenExportError, match=r"permission denied .* while exporting to"), \
            staged_output(tmp_path / "ro" / "out", force=False):
        pass
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_an_out_emptied_elsewhere_is_still_written(tmp_path: Path) -> None:
    """The check compares with what OUT held at the start: an empty OUT that stays empty is replaced."""
    (tmp_path / "out").mkdir()
    with staged_output(tmp_path / "out", force=False) as staging:
        (staging / "a.onnx").write_text("a")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.onnx"]


_HOLDER = """
import sys, time
from pathlib import Path
from gen_export.artifacts import reserved_outputs
with reserved_outputs([Path(sys.argv[1])], False):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_two_runs_cannot_write_one_out(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "out")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(GenExportError, match="another genexport run is writing"), \
                staged_output(tmp_path / "out", force=False):
            pass
        assert not (tmp_path / "out").exists()
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    # The holder was stopped by SIGTERM inside reserved_outputs: its lock file went with it.
    assert holder.returncode == 128 + signal.SIGTERM
    assert not (tmp_path / ".out.lock").exists()
    with staged_output(tmp_path / "out", force=False) as staging:
        (staging / "a").write_text("a")
    assert (tmp_path / "out" / "a").is_file()


def _scratch_left(scratch: Path) -> list[Path]:
    """What a run left in its TMPDIR; onnxruntime's own `.ses` file (not a scratch folder) does not count."""
    return [p for p in scratch.iterdir() if p.name != ".ses"]


def _env(tmp_path: Path) -> dict[str, str]:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"}


def test_sigterm_during_an_export_removes_staging_and_scratch(tiny_biogpt: Path, tmp_path: Path) -> None:
    """The real CLI in a subprocess, terminated while its staging folder exists."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "gen_export.cli", "beam", str(tiny_biogpt), "-o", str(out), "--no-parity"],
        env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.staging-*")):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the export never started staging"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmpdir"]  # no OUT, staging, backup or lock
    assert not _scratch_left(tmp_path / "tmpdir")  # no $TMPDIR/genexport-*


def test_reserved_outputs_turns_sigterm_into_cleanup(tmp_path: Path) -> None:
    """The library alone (no CLI handler): staging and scratch go on SIGTERM too."""
    script = """
import os, signal, sys, tempfile, time
from pathlib import Path
from gen_export.artifacts import staged_output
with staged_output(Path(sys.argv[1]), False) as staging, tempfile.TemporaryDirectory(prefix="genexport-") as s:
    (staging / "half.onnx").write_text("half")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
"""
    process = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], env=_env(tmp_path),
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, process.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmpdir"]
    assert not _scratch_left(tmp_path / "tmpdir")


def test_outputs_of_one_run_are_checked_together_before_anything_is_locked(tmp_path: Path) -> None:
    with pytest.raises(GenExportError, match="same folder"), \
            reserved_outputs([tmp_path / "a", tmp_path / "a"], force=True):
        pass
    assert sorted(tmp_path.iterdir()) == []
