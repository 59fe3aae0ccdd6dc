"""The S3 backend against moto's S3 server on loopback, with SigV4 signatures checked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_twisted
from twisted.internet import reactor

from kraken.backends.base import BackendError, BlobNotFound, make_backend
from tests.support import free_port


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """moto_server with authentication on: the first calls create a user and its key."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    moto = str(Path(sys.executable).with_name("moto_server"))
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        anon = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": "us-east-1"}
        iam = boto3.client("iam", endpoint_url=url, **anon)
        iam.create_user(UserName="kraken")
        policy = (
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
        )
        iam.put_user_policy(UserName="kraken", PolicyName="s3", PolicyDocument=policy)
        key = iam.create_access_key(UserName="kraken")["AccessKey"]
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="blobs")
        yield {"url": url, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        proc.terminate()
        proc.wait(10)


def backend(s3: dict[str, str], secret: str | None = None, **extra: Any) -> Any:
    config = {
        "type": "s3",
        "bucket": "blobs",
        "endpoint_url": s3["url"],
        "access_key_id": s3["key"],
        "secret_access_key": secret or s3["secret"],
        "prefix": "kraken/",
        **extra,
    }
    return make_backend(config, reactor)


@pytest_twisted.inlineCallbacks
def test_upload_stat_download_list(s3: dict[str, str], tmp_path: Path) -> Any:
    b = backend(s3)
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(300_000))
    yield b.upload("test/alpine", "ab12", str(src))
    yield b.upload("test/alpine", "repo/name:tag", str(src))
    size = yield b.stat("test/alpine", "ab12")
    assert size == 300_000
    dest = tmp_path / "copy"
    yield b.download("test/alpine", "ab12", str(dest))
    assert dest.read_bytes() == src.read_bytes()
    names = yield b.list("")
    assert names == ["ab12", "repo/name:tag"]
    names = yield b.list("repo/")
    assert names == ["repo/name:tag"]
    entries = yield b.entries("ab")
    assert [(e.name, e.size) for e in entries] == [("ab12", 300_000)]
    assert abs(entries[0].modified - time.time()) < 60
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_delete(s3: dict[str, str], tmp_path: Path) -> Any:
    b = backend(s3)
    src = tmp_path / "blob"
    src.write_bytes(b"to be deleted")
    yield b.upload("ns", "cd34", str(src))
    yield b.delete("ns", "cd34")
    with pytest.raises(BlobNotFound):
        yield b.stat("ns", "cd34")
    with pytest.raises(BlobNotFound):  # S3 itself answers 204 for a missing key
        yield b.delete("ns", "cd34")
    names = yield b.list("cd")
    assert names == []
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_large_files_go_up_in_parts(s3: dict[str, str], tmp_path: Path) -> Any:
    mib = 1024 * 1024
    b = backend(s3, multipart_threshold=6 * mib, part_size=5 * mib)
    src = tmp_path / "big"
    src.write_bytes(os.urandom(12 * mib + 123))
    yield b.upload("ns", "big", str(src))
    dest = tmp_path / "big.copy"
    yield b.download("ns", "big", str(dest))
    assert dest.read_bytes() == src.read_bytes()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_missing_blob_and_bad_signature(s3: dict[str, str], tmp_path: Path) -> Any:
    b = backend(s3)
    with pytest.raises(BlobNotFound):
        yield b.stat("ns", "nothing-here")
    with pytest.raises(BlobNotFound):
        yield b.download("ns", "nothing-here", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    bad = backend(s3, secret="wrong-secret")
    src = tmp_path / "blob"
    src.write_bytes(b"data")
    with pytest.raises(BackendError, match="403"):
        yield bad.upload("ns", "forged", str(src))
    with pytest.raises(BlobNotFound):
        yield b.stat("ns", "forged")
    yield b.close()
    yield bad.close()
