"""What several test packages share: running the CLI in this process and its failure contract, and
settings and manifests for the night's plan and the retraining decision.

Fixtures built on these live in tests/conftest.py (`cli`); import the helpers themselves
relatively (``from .helpers import Result``, ``from ..helpers import Result``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from facescale.app.cli import main
from facescale.config import Settings
from facescale.storage import DatasetStore, IdentityEntry, Location, Manifest, ShardInfo, make_slug


@dataclass
class Result:
    """One CLI run: exit code, standard output, standard error."""

    code: int
    out: str
    err: str

    def __iter__(self) -> Iterator[Any]:
        """``code, out, err = run_cli(...)``."""
        return iter(astuple(self))

    def single_error_line(self) -> str:
        """Assert the failure contract (non-zero, no traceback, one ``error: ...`` line) and return that line."""
        assert self.code != 0
        assert "Traceback" not in self.out + self.err
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("error: ")
        return lines[0]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """`facescale.app.cli.main` in this process (the console script's code path), its output captured."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def store_settings(root: Path, keywords: Path | None = None, **orchestration: object) -> Settings:
    """Settings on a store at ``root`` with ``keywords`` as the keywords file and ``orchestration`` overrides."""
    orch = {"keywords_file": str(keywords) if keywords else None, **orchestration}
    return Settings(storage={"root": str(root)}, orchestration=orch)


def commit_manifest(root: Path, version_id: str, names: Sequence[str] = (), rows: int = 0, *, published: bool = True,
             waiting: Sequence[str] = ()) -> None:
    """Commit a manifest of ``rows`` rows over ``names`` (no shard files: the decision reads manifests only)."""
    location = Location.from_uri(str(root))
    store = DatasetStore(location)
    manifest = Manifest(
        version_id=version_id,
        identities=[IdentityEntry(name=n, slug=make_slug(n), label=i) for i, n in enumerate(names)],
        shards=[ShardInfo(path="shards/part-0.parquet", rows=rows, bytes=1, sha256="0" * 64)],
        published_at=datetime(2026, 11, 1, tzinfo=UTC) if published else None,
        notes={"curation": {"waiting": {make_slug(n): {} for n in waiting}}},
    )
    location.makedirs(store.version_dir(version_id))
    location.write_bytes_atomic(store.manifest_path(version_id), manifest.to_json())


def stop_group(process: subprocess.Popen[Any], timeout: float = 60) -> None:
    """Stop a server started with ``start_new_session=True`` and its children: SIGTERM, then SIGKILL."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def moto_bucket() -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh bucket on a local moto S3 server: yields (``s3://bucket``, the fsspec storage options)."""
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"facescale-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)
        yield f"s3://{bucket}", {"key": "testing", "secret": "testing",
                                 "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    finally:
        server.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll ``check`` every ``every`` seconds until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def page_text(driver: Any) -> str:
    """The visible text of the browser's page ('' while it is loading)."""
    try:
        return str(driver.execute_script("return document.body ? document.body.innerText : ''"))
    except Exception:  # the page is loading
        return ""
