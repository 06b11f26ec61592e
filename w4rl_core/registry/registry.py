"""The policy registry: immutable promotion records (and the promoted weights) in a directory or
under an S3 prefix. A version is written once: a second write of the same id is refused, on local
disk (hard link, which fails if the name exists) and on S3 (conditional put, If-None-Match: *).

What is promoted is a sequence per task, `promotions/<task>/<n>.json`, each naming a registered
policy and the version it replaced. A promotion writes version n+1 where n is the version it read
before checking the candidate against it, with the same conditional write: of two promotions that
race, exactly one gets n+1 and the other fails cleanly (RegistryConflict) without touching it, so
non-regression is always checked against the policy actually replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from w4rl_core.atomic import remove_debris, tmp_sibling

RECORDS, POLICIES, PROMOTIONS = "records", "policies", "promotions"
# 2: registering no longer promotes (promotions/ does). Records without it come from registries
# where every registration was a promotion, and count as promoted in order of registration.
REGISTRY_FORMAT = 2


class RegistryConflict(FileExistsError):
    """The version is already registered: registry entries are immutable."""


class RegistryUnavailable(OSError):
    """The registry's storage did not answer or refused, after the bounded retries: names the URL
    and the operation (never a credential). Nothing was promoted by the failed call."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Local:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def put_new(self, key: str, data: bytes) -> None:
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_debris(dest)  # the temporary of a writer killed before its link
        tmp = tmp_sibling(dest)
        tmp.write_bytes(data)
        try:
            os.link(tmp, dest)  # atomic, and refuses an existing name: no overwrite, no half file
        except FileExistsError as err:
            raise RegistryConflict(f"{dest} exists: registry entries are immutable") from err
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        # Hidden names are temporaries of writes in flight (or killed): not entries.
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))


class _S3:
    def __init__(self, url: str, endpoint_url: str | None, retries: int, timeout_s: float) -> None:
        import boto3
        from botocore.config import Config

        from w4rl_core.data.storage import s3_endpoint_url

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix, self.retries = bucket, prefix.strip("/"), retries
        # botocore's own bounded retries (standard mode: exponential backoff with jitter) and
        # timeouts; credentials come from the standard AWS chain only.
        config = Config(retries={"max_attempts": retries, "mode": "standard"}, connect_timeout=timeout_s,
                        read_timeout=timeout_s)
        self.client = boto3.client("s3", endpoint_url=endpoint_url or s3_endpoint_url(), config=config)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, operation: str, key: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        url = f"s3://{self.bucket}/{self._key(key)}"
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise RegistryConflict(f"{url} exists: entries are immutable") from err
            if code in ("NoSuchKey", "404"):
                raise KeyError(url) from err
            raise RegistryUnavailable(f"registry {operation} {url} refused: {code} "
                                      f"({err.response.get('Error', {}).get('Message', '')})") from None
        except BotoCoreError as err:  # no connection, timeouts, no credentials: after the retries
            raise RegistryUnavailable(f"registry {operation} {url} failed after {self.retries} attempts: "
                                      f"{type(err).__name__}: {err}") from None

    def put_new(self, key: str, data: bytes) -> None:
        self._call("write", key, self.client.put_object, Key=self._key(key), Body=data, IfNoneMatch="*")

    def get(self, key: str) -> bytes:
        return self._call("read", key, self.client.get_object, Key=self._key(key))["Body"].read()

    def list(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            kwargs = {"Prefix": self._key(prefix)}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", prefix, self.client.list_objects_v2, **kwargs)
            keys += [o["Key"][len(self._key("")):] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page["NextContinuationToken"]


@dataclass
class Registry:
    """`root`: a local directory (default `registry/`) or `s3://bucket/prefix`."""

    root: str
    endpoint_url: str | None = None
    retries: int = 3  # attempts per S3 request (botocore standard mode: exponential backoff)
    timeout_s: float = 10.0  # connect and read timeout per attempt

    def __post_init__(self) -> None:
        if self.retries < 1 or self.timeout_s <= 0:
            raise ValueError(f"registry retries must be >= 1 and timeout_s > 0, got {self.retries}, {self.timeout_s}")
        self._store = (_S3(self.root, self.endpoint_url, self.retries, self.timeout_s) if self.root.startswith("s3://")
                       else _Local(self.root))

    def register(self, policy_dir: str | Path, record: dict[str, Any]) -> dict[str, Any]:
        """Copy the policy's files and write its record; the id is task@<weights sha256[:12]>."""
        policy_dir = Path(policy_dir)
        digest = sha256_file(policy_dir / "model.safetensors")
        policy_id = self.policy_id(record["task"], policy_dir)
        full = {**record, "policy_id": policy_id, "policy_sha256": digest, "registry_format": REGISTRY_FORMAT,
                "registered_at": datetime.now(timezone.utc).isoformat()}
        key = f"{RECORDS}/{policy_id}.json"
        if self._store.list(key):
            raise RegistryConflict(f"{policy_id} is already registered: registry entries are immutable")
        for name in ("model.safetensors", "config.json"):
            try:
                self._store.put_new(f"{POLICIES}/{policy_id}/{name}", (policy_dir / name).read_bytes())
            except RegistryConflict:
                pass  # weights of a failed earlier registration: same content by construction (hash id)
        self._store.put_new(key, json.dumps(full, indent=2, sort_keys=True).encode())
        return full

    def fetch_policy(self, policy_id: str, dest: str | Path) -> Path:
        """The registered policy's files into `dest` (a new directory), checked against the
        record's sha256 (weights are safetensors: nothing from storage is unpickled)."""
        record, dest = self.get(policy_id), Path(dest)
        dest.mkdir(parents=True)
        for name in ("model.safetensors", "config.json"):
            (dest / name).write_bytes(self._store.get(f"{POLICIES}/{policy_id}/{name}"))
        if sha256_file(dest / "model.safetensors") != record["policy_sha256"]:
            raise RegistryConflict(f"{policy_id}: the registry's weights do not match their record's sha256")
        return dest

    @staticmethod
    def policy_id(task: str, policy_dir: str | Path) -> str:
        """The id a policy gets: task@<weights sha256[:12]> (same weights, same id)."""
        return f"{task}@{sha256_file(Path(policy_dir) / 'model.safetensors')[:12]}"

    def records(self) -> list[dict[str, Any]]:
        return sorted((json.loads(self._store.get(k)) for k in self._store.list(f"{RECORDS}/") if k.endswith(".json")),
                      key=lambda r: r["registered_at"])

    def get(self, policy_id: str) -> dict[str, Any]:
        try:
            return json.loads(self._store.get(f"{RECORDS}/{policy_id}.json"))
        except (FileNotFoundError, KeyError) as err:  # local, or S3's NoSuchKey (see _S3._call)
            raise KeyError(f"no policy {policy_id!r} in registry {self.root}") from err

    def _heads(self, prefix: str) -> dict[str, tuple[int, str]]:
        """task -> (version, policy id) of its latest promotion, from one listing of `prefix`."""
        latest: dict[str, str] = {}
        for key in self._store.list(prefix):
            task = Path(key).parent.name
            if key.endswith(".json") and (task not in latest or int(Path(key).stem) > int(Path(latest[task]).stem)):
                latest[task] = key
        return {task: (int(Path(key).stem), json.loads(self._store.get(key))["policy_id"])
                for task, key in latest.items()}

    def head(self, task: str) -> tuple[int, str | None]:
        """(version, policy id) of the task's current promotion; (0, None) before the first."""
        return self._heads(f"{PROMOTIONS}/{task}/").get(task, (0, None))

    def promote(self, task: str, policy_id: str, after: int) -> int:
        """Make `policy_id` (registered) the task's promoted policy as version `after` + 1, where
        `after` is the version the caller checked the candidate against. Returns the new version;
        RegistryConflict when another promotion took that version first."""
        self.get(policy_id)  # only registered policies are promoted
        version = after + 1
        entry = {"task": task, "policy_id": policy_id, "version": version, "replaces": after or None,
                 "promoted_at": datetime.now(timezone.utc).isoformat()}
        try:
            self._store.put_new(f"{PROMOTIONS}/{task}/{version:06d}.json",
                                json.dumps(entry, indent=2, sort_keys=True).encode())
        except RegistryConflict as err:
            _, winner = self.head(task)
            raise RegistryConflict(f"promotion of {policy_id} lost a race: {task} version {version} was taken by "
                                   f"{winner}; run the promotion again to check the candidate against it") from err
        return version

    def promoted(self) -> dict[str, dict[str, Any]]:
        """The promoted record per task: its latest promotion version (for registries written before
        promotion versions existed, the latest record)."""
        latest: dict[str, dict[str, Any]] = {}
        for r in self.records():
            if "registry_format" not in r:  # written before promotion versions: registered = promoted
                latest[r["task"]] = r
        for task, (version, policy_id) in self._heads(f"{PROMOTIONS}/").items():
            latest[task] = self.get(policy_id) | {"promotion_version": version}
        return latest
