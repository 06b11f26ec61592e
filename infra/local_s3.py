#!/usr/bin/env python
"""A local S3-compatible server for development: moto's standalone server, with authentication on.

    .venv/bin/python infra/local_s3.py                 # 127.0.0.1:9000, bucket w4rl
    .venv/bin/python infra/local_s3.py --port 9100 --bucket data

moto accepts any credentials by default. We switch its IAM authentication on
(INITIAL_NO_AUTH_ACTION_COUNT): the first few requests create an IAM user with S3 rights and an
access key, after which every request must be signed with that key. The key is written to an AWS
shared-credentials file (mode 0600, git-ignored) and never printed; clients use it through the
standard AWS chain (AWS_SHARED_CREDENTIALS_FILE + AWS_PROFILE). For production use MinIO or AWS
S3 (see infra/README.md). Binds 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

BOOTSTRAP_REQUESTS = 3  # create_user, put_user_policy, create_access_key
PROFILE = "w4rl-local"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bucket", default="w4rl")
    parser.add_argument("--state-dir", default=str(Path(__file__).resolve().parent.parent / ".local-s3"),
                        help="where the credentials file and the ready marker are written")
    args = parser.parse_args(argv)

    # Must be set before moto is imported: it reads the setting once.
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP_REQUESTS)
    import boto3
    from moto.server import ThreadedMotoServer

    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    ready = state / "ready.json"
    ready.unlink(missing_ok=True)

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    endpoint = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '') else args.host}:{args.port}"
    try:
        # The bootstrap requests are the only unauthenticated ones the server will ever accept.
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="w4rl")
        iam.put_user_policy(
            UserName="w4rl",
            PolicyName="s3-all",
            PolicyDocument=json.dumps({"Version": "2012-10-17",
                                       "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}),
        )
        key = iam.create_access_key(UserName="w4rl")["AccessKey"]
        credentials = state / "credentials"
        fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"[{PROFILE}]\naws_access_key_id = {key['AccessKeyId']}\n"
                    f"aws_secret_access_key = {key['SecretAccessKey']}\n")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"]).create_bucket(Bucket=args.bucket)
    except Exception:
        server.stop()
        raise
    ready.write_text(json.dumps({"endpoint": endpoint, "bucket": args.bucket, "profile": PROFILE,
                                 "credentials_file": str(credentials)}))
    print(f"local S3 on {endpoint}, bucket s3://{args.bucket}; use it with:\n"
          f"  export AWS_SHARED_CREDENTIALS_FILE={credentials} AWS_PROFILE={PROFILE} W4RL_S3_ENDPOINT_URL={endpoint}\n"
          f"  dvc remote add -d s3 s3://{args.bucket}/dvc && dvc remote modify s3 endpointurl {endpoint}",
          flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    ready.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
