"""Put a Triton model repository into S3-compatible object storage, and fetch it back, verified.

`upload_repository` copies every file under a repository to `s3://BUCKET/PREFIX/...` with boto3 and puts
`genexport-upload.json` (every key, size and sha256) there last, so a listing with that object is a complete
upload. An empty folder (an ensemble's version folder `1/`) becomes a zero-byte `folder/` marker: object stores
have no folders, and without it Triton finds no version of the ensemble. `download_repository` fetches a
prefix and checks each file against that list. Credentials come from boto3's usual chain (environment, ~/.aws,
instance roles): genexport never takes or stores them. An S3-compatible endpoint (MinIO, Ceph, moto) is passed
as `endpoint_url` (or AWS_ENDPOINT_URL, which boto3 reads itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen_export.artifacts import sha256_file, staged_output
from gen_export.errors import GenExportError

UPLOAD_MANIFEST = "genexport-upload.json"


@dataclass(frozen=True)
class StoredFile:
    key: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class UploadResult:
    url: str
    files: tuple[StoredFile, ...]
    empty_folders: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix without slashes at the ends)."""
    scheme, sep, rest = url.partition("://")
    if scheme != "s3" or not sep:
        raise GenExportError(f"unknown storage scheme in '{url}'", "give an s3://BUCKET/PREFIX URL")
    bucket, _, prefix = rest.partition("/")
    if not bucket or "@" in bucket or ":" in bucket:
        raise GenExportError(f"'{url}' names no bucket", "give s3://BUCKET/PREFIX (the endpoint goes in "
                             "--endpoint-url, credentials in the environment)")
    return bucket, prefix.strip("/")


def _client(endpoint_url: str | None) -> Any:
    try:
        import boto3
    except ImportError:
        raise GenExportError("boto3 is not installed", "pip install 'genexport[deploy]'") from None
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url)


def _s3_call(action: str, url: str, call: Any) -> Any:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "?")
        if code == "404":  # head_bucket answers with the bare status
            code = "NoSuchBucket"
        raise GenExportError(f"S3 {action} of {url} failed ({code})",
                             "check the bucket exists and the credentials may write/read it") from None
    except Boto3Error as error:  # boto3's transfer manager wraps client errors in its own exceptions
        raise GenExportError(f"S3 {action} of {url} failed ({str(error).splitlines()[0]})",
                             "check the bucket exists and the credentials may write/read it") from None
    except BotoCoreError as error:
        raise GenExportError(f"S3 {action} of {url} failed ({error})",
                             "check --endpoint-url and the credentials in the environment") from None


def upload_repository(repo_dir: Path, url: str, *, endpoint_url: str | None = None) -> UploadResult:
    """Upload every file of a checked Triton repository under `url`; the file list goes last."""
    from gen_export.serve.deploy import _check_repository

    repo_dir = Path(repo_dir)
    bucket, prefix = parse_s3_url(url)
    _check_repository(repo_dir)
    client = _client(endpoint_url)
    _s3_call("upload", url, lambda: client.head_bucket(Bucket=bucket))  # fail before writing anything
    files = []
    for path in sorted(p for p in repo_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(repo_dir).as_posix()
        if relative == UPLOAD_MANIFEST:
            continue
        key = f"{prefix}/{relative}" if prefix else relative
        _s3_call("upload", url, lambda path=path, key=key: client.upload_file(str(path), bucket, key))
        files.append(StoredFile(relative, path.stat().st_size, sha256_file(path)))
    # Object stores have no folders: an empty one (an ensemble's version folder "1/") vanishes, and Triton then
    # refuses the ensemble ("No model version was found"). A zero-byte "folder/" marker keeps it listable.
    empty = sorted(p.relative_to(repo_dir).as_posix() for p in repo_dir.rglob("*") if p.is_dir()
                   and not any(p.iterdir()))
    for folder in empty:
        marker = f"{prefix}/{folder}/" if prefix else f"{folder}/"
        _s3_call("upload", url, lambda marker=marker: client.put_object(Bucket=bucket, Key=marker, Body=b""))
    listing = json.dumps({"files": [f.__dict__ for f in files], "empty_folders": empty}, indent=2).encode()
    key = f"{prefix}/{UPLOAD_MANIFEST}" if prefix else UPLOAD_MANIFEST
    _s3_call("upload", url, lambda: client.put_object(Bucket=bucket, Key=key, Body=listing))
    return UploadResult(url, tuple(files), tuple(empty))


def download_repository(url: str, target: Path, *, endpoint_url: str | None = None,
                        force: bool = False) -> UploadResult:
    """Fetch an uploaded repository into `target`; every file must match the upload's sha256 list."""
    bucket, prefix = parse_s3_url(url)
    client = _client(endpoint_url)
    key = f"{prefix}/{UPLOAD_MANIFEST}" if prefix else UPLOAD_MANIFEST
    body = _s3_call("download", url, lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())
    document = json.loads(body)
    listed = [StoredFile(**f) for f in document["files"]]
    with staged_output(Path(target), force) as staging:
        for folder in document.get("empty_folders", []):
            if folder.startswith("/") or ".." in Path(folder).parts:
                raise GenExportError(f"{url} lists an unsafe folder '{folder}'", "re-upload the repository")
            (staging / folder).mkdir(parents=True, exist_ok=True)
        for stored in listed:
            if stored.key.startswith("/") or ".." in Path(stored.key).parts:
                raise GenExportError(f"{url} lists an unsafe key '{stored.key}'", "re-upload the repository")
            path = staging / stored.key
            path.parent.mkdir(parents=True, exist_ok=True)
            source = f"{prefix}/{stored.key}" if prefix else stored.key
            _s3_call("download", url, lambda path=path, source=source: client.download_file(bucket, source,
                                                                                          str(path)))
            if sha256_file(path) != stored.sha256:
                raise GenExportError(f"{stored.key} from {url} differs from what was uploaded",
                                     "re-upload the repository")
    return UploadResult(url, tuple(listed), tuple(document.get("empty_folders", [])))

