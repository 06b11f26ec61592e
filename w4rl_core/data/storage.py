"""Where stores live: a local directory or any S3 endpoint (AWS, MinIO, a loopback test server).

Credentials are never passed here: s3fs/botocore read them from the standard AWS chain
(environment, ~/.aws, instance role). Only the endpoint URL is configuration, so one code path
serves AWS, MinIO and the tests' local server.
"""

from __future__ import annotations

import os
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


def storage_options_for(url: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: only the endpoint, never credentials."""
    if not str(url).startswith("s3://"):
        return {}
    endpoint = endpoint_url or s3_endpoint_url()
    return {"endpoint_url": endpoint} if endpoint else {}


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
