"""Where stores live: a local directory or any S3 endpoint (AWS, MinIO, a loopback test server).

Credentials are never passed here: s3fs/botocore read them from the standard AWS chain
(environment, ~/.aws, instance role). Only the endpoint URL is configuration, so one code path
serves AWS, MinIO and the tests' local server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zarr.storage

#: Checked in order. AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL are botocore's own names; the w4rl
#: one wins so that a user can point w4rl elsewhere than other AWS tools in the same shell.
ENDPOINT_ENV_VARS = ("W4RL_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def is_remote(url: str | os.PathLike[str]) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def s3_endpoint_url() -> str | None:
    for var in ENDPOINT_ENV_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


#: Attempts per S3 request and the connect/read timeout of each (seconds): a storage outage fails
#: within a bound instead of hanging a nightly run. Environment, as the AWS settings are.
RETRIES_ENV, TIMEOUT_ENV = "W4RL_S3_RETRIES", "W4RL_S3_TIMEOUT_S"


def s3_retry_policy() -> tuple[int, float]:
    try:
        retries, timeout = int(os.environ.get(RETRIES_ENV, "3")), float(os.environ.get(TIMEOUT_ENV, "10"))
    except ValueError as err:
        raise ValueError(f"{RETRIES_ENV} must be an integer and {TIMEOUT_ENV} a number: {err}") from err
    if retries < 1 or timeout <= 0:
        raise ValueError(f"{RETRIES_ENV} must be >= 1 and {TIMEOUT_ENV} > 0, got {retries}, {timeout}")
    return retries, timeout


def storage_options_for(url: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: the endpoint and the bounded retries, never credentials.

    botocore's standard retry mode (exponential backoff with jitter) makes the attempts. s3fs adds
    its own loop (5 passes, not a constructor option) for read timeouts and dropped responses only,
    so the worst case of one request is 5 x retries x timeout; a refused connection fails after
    `retries` attempts."""
    if not str(url).startswith("s3://"):
        return {}
    retries, timeout = s3_retry_policy()
    options: dict[str, Any] = {"config_kwargs": {
        "retries": {"max_attempts": retries, "mode": "standard"}, "connect_timeout": timeout, "read_timeout": timeout}}
    endpoint = endpoint_url or s3_endpoint_url()
    return options | ({"endpoint_url": endpoint} if endpoint else {})


class StorageUnavailable(OSError):
    """Remote storage did not answer or refused, after the bounded retries. Names the operation and
    URL; never credentials (botocore's messages do not carry them, and we add none)."""


@contextmanager
def storage_errors(operation: str, url: str) -> Iterator[None]:
    """Turn what s3fs/botocore raise on an outage, a missing bucket or bad credentials into one
    StorageUnavailable naming `operation` and `url`. A store that exists (FileExistsError) and
    errors of our own (ValueError) pass through."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except FileExistsError:
        raise
    except (BotoCoreError, ClientError, OSError) as err:
        retries, _ = s3_retry_policy()
        raise StorageUnavailable(f"{operation} {url} failed ({retries} attempts per request, {RETRIES_ENV}): "
                                 f"{type(err).__name__}: {err}") from err


def remove_tree(url: str, endpoint_url: str | None = None) -> None:
    """Delete everything under a storage URL (a store's prefix)."""
    import fsspec

    if is_remote(url):
        fs, path = fsspec.core.url_to_fs(str(url), **storage_options_for(str(url), endpoint_url))
        fs.rm(path, recursive=True)
    else:
        import shutil

        shutil.rmtree(Path(str(url).removeprefix("file://")), ignore_errors=True)


def open_zarr_store(
    url: str | os.PathLike[str], *, read_only: bool, endpoint_url: str | None = None
) -> zarr.storage.StoreLike:
    """A zarr store object for a local path or an fsspec URL (``s3://bucket/prefix``)."""
    if is_remote(url):
        return zarr.storage.FsspecStore.from_url(
            str(url), storage_options=storage_options_for(str(url), endpoint_url), read_only=read_only
        )
    path = Path(str(url).removeprefix("file://"))
    return zarr.storage.LocalStore(path, read_only=read_only)
