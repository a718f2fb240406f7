"""Atomic output folders, file hashes and the `genexport.json` manifest.

Outputs are assembled in a staging folder beside the target and moved into place only after every
check passed, so a failed or interrupted run never leaves a half-written `OUT`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from gen_export import __version__
from gen_export.errors import GenExportError
from gen_export.manifest import MANIFEST_NAME, SETTINGS_TYPES, ArtifactRecord, GraphRecord, ManifestFieldError, convert
from gen_export.manifest import Manifest as TypedManifest
from gen_export.manifest import read_manifest as read_manifest  # re-exported: where callers have always found it

TRACKED_LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "numpy")


#: What a tokenizer needs to load offline with AutoTokenizer (whichever of these a checkpoint has), plus
#: config.json, which AutoTokenizer reads to pick the tokenizer class.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "added_tokens.json", "config.json")


def check_inside(source: Path, names: tuple[str, ...]) -> None:
    """Refuse any of `names` in `source` that is a link resolving outside `source`.

    A tokenizer file that is a link to /etc/passwd would otherwise be copied into OUT (and its hash put in the
    manifest). Links inside the folder are fine; a Hugging Face cache snapshot (links into ../../blobs) has to
    be copied out with its links dereferenced first.
    """
    root = source.resolve()
    for name in names:
        path = source / name
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise GenExportError(
                f"{path} is a link to {path.resolve()}, outside the model folder",
                "replace the link by a copy of the file you trust (cp --dereference), or copy the folder with "
                "cp -rL",
            )


def copy_tokenizer_files(source: Path, target: Path, extra: tuple[str, ...] = ()) -> None:
    """Copy the tokenizer files `source` has (and `extra` ones) into `target`, creating it.

    Only regular files are copied, never a link that leaves `source` (see `check_inside`).
    """
    names = (*TOKENIZER_FILES, *extra)
    check_inside(source, names)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


# --- Output folders -------------------------------------------------------------------------------------
#
# Rules (README "Safety"): OUT is new, empty, or -- with force -- a folder genexport wrote (it holds
# genexport.json; Triton repositories get one too). Never the model folder, the current folder, the home
# folder or a filesystem root, nor a folder containing one of them. Several outputs of one run are checked
# together and must not be or contain one another. A run holds an exclusive lock on each OUT for its whole
# duration, and the final swap refuses to delete anything that appeared in OUT meanwhile.

#: Held output locks of this process: resolved OUT -> (lock file, descriptor, nesting depth, OUT's state).
_HELD: dict[Path, _Held] = {}


@dataclass
class _Held:
    lock_path: Path
    fd: int
    depth: int
    #: What OUT held when the run started: None (absent) or its entries (path, size, mtime_ns).
    snapshot: frozenset[tuple[str, int, int]] | None
    #: The topmost parent folder of OUT this run created (removed again if the run writes nothing).
    created: Path | None = None


def _snapshot(folder: Path) -> frozenset[tuple[str, int, int]] | None:
    if not folder.exists():
        return None
    entries = set()
    for path in folder.rglob("*"):
        info = path.lstat()
        entries.add((path.relative_to(folder).as_posix(), info.st_size if path.is_file() else 0, info.st_mtime_ns))
    return frozenset(entries)


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or inner.is_relative_to(outer)


def _protected_paths(model_dirs: tuple[Path, ...]) -> list[tuple[str, Path]]:
    protected = []
    with contextlib.suppress(OSError):  # a deleted working folder has no path
        protected.append(("the current folder", Path.cwd().resolve()))
    with contextlib.suppress(RuntimeError, KeyError):
        protected.append(("your home folder", Path.home().resolve()))
    protected += [("the folder it reads from (model or export)", Path(m).expanduser().resolve()) for m in model_dirs]
    return protected


def check_output_target(output: Path, force: bool, *, model_dirs: tuple[Path, ...] = ()) -> Path:
    """Refuse an output folder genexport must not write or replace; called before any work. Returns it resolved.

    `model_dirs`: folders the run reads (the checkpoint, or the export a Triton repository is made from).
    """
    output = Path(output).expanduser().resolve()
    if output.parent == output:
        raise GenExportError(f"output {output} is a filesystem root", "choose a new output folder")
    for what, path in _protected_paths(model_dirs):
        if _contains(output, path):
            relation = "is" if output == path else "contains"
            raise GenExportError(
                f"output {output} {relation} {what} ({path}); genexport never writes over it, even with --force",
                "choose a new, separate output folder",
            )
    if output.exists() and not output.is_dir():
        raise GenExportError(f"output {output} exists and is not a folder", "choose another output path")
    if output.is_dir() and any(output.iterdir()):
        if not force:
            raise GenExportError(
                f"output folder {output} already exists and is not empty",
                "choose a new output folder or pass --force to replace it",
            )
        if not (output / MANIFEST_NAME).is_file():
            raise GenExportError(
                f"output folder {output} was not written by genexport (no {MANIFEST_NAME}): --force only replaces "
                "genexport's own outputs",
                "choose a new output folder, or empty this one yourself",
            )
    return output


def check_output_targets(outputs: list[Path | None], force: bool, *, model_dirs: tuple[Path, ...] = ()) -> list[Path]:
    """`check_output_target` for every output of one run, plus: they differ and none contains another."""
    resolved = [check_output_target(o, force, model_dirs=model_dirs) for o in outputs if o is not None]
    for i, first in enumerate(resolved):
        for second in resolved[i + 1:]:
            if _contains(first, second) or _contains(second, first):
                relation = "is the same folder as" if first == second else "contains" if _contains(
                    first, second) else "is inside"
                raise GenExportError(
                    f"output {first} {relation} {second}: one run cannot write both there",
                    "give --output and --triton-repo two separate folders",
                )
    return resolved


def _lock(output: Path) -> _Held:
    """Take (or re-enter) the exclusive lock on `output`: a `.NAME.lock` file beside it, flock'ed."""
    held = _HELD.get(output)
    if held is not None:
        held.depth += 1
        return held
    created = next((p for p in reversed(output.parents) if not p.exists()), None)  # topmost missing parent
    lock_path = output.with_name(f".{output.name}.lock")
    while True:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            _remove_created(output, created)
            raise _disk_error(error, output) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            _remove_created(output, created)
            raise GenExportError(f"another genexport run is writing {output}",
                                 "wait for it to finish, or choose another output folder") from None
        # The holder before us may have removed the file after we opened it: lock the file that is there now.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    held = _Held(lock_path, fd, 1, _snapshot(output), created)
    _HELD[output] = held
    return held


def _unlock(output: Path) -> None:
    held = _HELD[output]
    held.depth -= 1
    if held.depth:
        return
    del _HELD[output]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(held.lock_path)
    os.close(held.fd)
    _remove_created(output, held.created)


def _remove_created(output: Path, created: Path | None) -> None:
    """A run that wrote nothing leaves no trace: the (empty) parent folders it created for OUT go too."""
    if created is None or output.exists():
        return
    folder = output.parent
    while folder.is_relative_to(created):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


class Terminated(SystemExit):
    """Raised by the SIGTERM handler so that staging and scratch folders are removed as on Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


@contextlib.contextmanager
def cleanup_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception while the block runs (main thread, default handler only)."""
    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    if install:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def reserved_outputs(outputs: list[Path | None], force: bool, *,
                     model_dirs: tuple[Path, ...] = ()) -> Iterator[list[Path]]:
    """Check every output of a run together, then lock them all until the block exits.

    Export functions open one around their whole run; a caller writing several outputs (an export and its
    Triton repository) opens one around all of them, and the inner ones re-enter its locks.
    """
    resolved = check_output_targets(outputs, force, model_dirs=model_dirs)
    with contextlib.ExitStack() as stack:
        stack.enter_context(cleanup_on_sigterm())
        for output in resolved:
            _lock(output)
            stack.callback(_unlock, output)
        yield resolved


_DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}


@contextlib.contextmanager
def staged_output(output: Path, force: bool, *, model_dirs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a staging folder; on clean exit it replaces `output`, on error (or SIGTERM) it is removed."""
    with reserved_outputs([output], force, model_dirs=model_dirs) as (output,):
        held = _HELD[output]
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
        except OSError as error:
            raise _disk_error(error, output) from None
        try:
            yield staging
            _swap(staging, output, held.snapshot)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            if error.errno in _DISK_ERRORS:
                raise _disk_error(error, output) from None
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _disk_error(error: OSError, output: Path) -> GenExportError:
    what = _DISK_ERRORS.get(error.errno or 0, error.strerror or "cannot write")
    return GenExportError(f"{what} ({error.filename or output}) while exporting to {output}; nothing was written",
                          "free space or fix permissions there, or choose another output folder")


def _swap(staging: Path, output: Path, before: frozenset[tuple[str, int, int]] | None) -> None:
    """Move `staging` to `output`, replacing only what `output` held when the run started."""
    changed = GenExportError(f"{output} changed while genexport was writing it; nothing was replaced",
                             "make sure nothing else writes there, then run again")
    if before is None:
        if output.exists():  # appeared during the run
            raise changed
        try:
            staging.rename(output)  # fails (ENOTEMPTY) rather than replace a folder that appeared just now
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise changed from None
            raise
        return
    # Move the old folder aside first (so a failure leaves one complete folder), then compare what was moved
    # with what was there at the start; anything new goes back untouched.
    backup = output.with_name(f".{output.name}.old-{staging.name.rsplit('-', 1)[-1]}")
    output.rename(backup)
    if _snapshot(backup) != before:
        backup.rename(output)
        raise changed
    staging.rename(output)
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
    """What a command records in `OUT/genexport.json`; `write` adds the file hashes and library versions.

    `settings` is the command's settings type from `gen_export.manifest` (GenerationSettings, EmbeddingSettings,
    ...); `graph` maps each ONNX file to `runtime.graph_io`'s description of it.
    """

    command: str
    source: dict[str, Any]
    graph: dict[str, Any] = field(default_factory=dict)
    settings: Any = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None

    def write(self, folder: Path) -> Path:
        """Hash every file already in `folder` and write the manifest beside them.

        The document is built through `gen_export.manifest.Manifest` and read back through it before it is
        written, so every output holds a manifest that `genexport info`, `run` and `triton` can read.
        """
        artifacts = [
            ArtifactRecord(p.relative_to(folder).as_posix(), p.stat().st_size, sha256_file(p))
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME
        ]
        try:
            typed = TypedManifest(
                command=self.command, versions=library_versions(), source=self.source, artifacts=artifacts,
                graph=convert(self.graph, dict[str, GraphRecord], "graph"),
                settings=convert(self.settings, SETTINGS_TYPES.get(self.command, dict[str, Any]), "settings"),
                validation=self.validation, parity=self.parity)
            document = typed.to_dict()
            TypedManifest.from_dict(json.loads(json.dumps(document)))
        except ManifestFieldError as error:  # a writer out of step with the types: a genexport bug
            raise TypeError(f"the {self.command} manifest does not match gen_export.manifest: {error}") from None
        path = folder / MANIFEST_NAME
        # allow_nan=False: a NaN would make the manifest invalid strict JSON; values are checked before export.
        path.write_text(json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n")
        return path

