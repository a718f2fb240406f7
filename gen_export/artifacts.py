"""Atomic output folders, file hashes and the `genexport.json` manifest.

Outputs are assembled in a staging folder beside the target and moved into place only after every
check passed, so a failed or interrupted run never leaves a half-written `OUT`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from gen_export import __version__
from gen_export.errors import GenExportError

MANIFEST_NAME = "genexport.json"
TRACKED_LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "numpy")


#: What a tokenizer needs to load offline with AutoTokenizer (whichever of these a checkpoint has), plus
#: config.json, which AutoTokenizer reads to pick the tokenizer class.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "added_tokens.json", "config.json")


def copy_tokenizer_files(source: Path, target: Path, extra: tuple[str, ...] = ()) -> None:
    """Copy the tokenizer files `source` has (and `extra` ones) into `target`, creating it."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (*TOKENIZER_FILES, *extra):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def check_output_target(output: Path, force: bool) -> None:
    """Refuse an existing non-empty output folder unless `force`; called before any work starts."""
    if output.exists() and not output.is_dir():
        raise GenExportError(f"output {output} exists and is not a folder", "choose another --output path")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise GenExportError(
            f"output folder {output} already exists and is not empty",
            "choose a new --output folder or pass --force to replace it",
        )


@contextlib.contextmanager
def staged_output(output: Path, force: bool) -> Iterator[Path]:
    """Yield a staging folder; on clean exit it replaces `output`, on error it is removed."""
    output = output.resolve()
    check_output_target(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Swap: move the old folder aside first so that a failure here leaves one complete folder.
    backup = None
    if output.exists():
        backup = output.with_name(f".{output.name}.old-{staging.name.rsplit('-', 1)[-1]}")
        output.rename(backup)
    staging.rename(output)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One digest over several files (name and content), e.g. all weight shards of a checkpoint."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "genexport": __version__}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class Manifest:
    """What `OUT/genexport.json` records: enough to reproduce and to audit the export."""

    command: str
    source: dict[str, Any]
    graph: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None

    def write(self, folder: Path) -> Path:
        """Hash every file already in `folder` and write the manifest beside them."""
        artifacts = [
            {"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME
        ]
        document = {
            "genexport_manifest_version": 1,
            "command": self.command,
            "versions": library_versions(),
            "source": self.source,
            "artifacts": artifacts,
            "graph": self.graph,
            "settings": self.settings,
            "validation": self.validation,
            "parity": self.parity,
        }
        path = folder / MANIFEST_NAME
        path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
        return path


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise GenExportError(f"{folder} has no {MANIFEST_NAME}", "point at a folder written by genexport")
    return json.loads(path.read_text())
