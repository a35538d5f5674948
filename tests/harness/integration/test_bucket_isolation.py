"""The run's bucket is empty at the start of every test that can see it, whatever client wrote
to it, and a test that cannot see it pays no listing: examples/bucket_probe.py in a nested run,
in its file order. And the emptiness check's way back to boto3."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from realstack.buckets import BucketJanitor, EmptinessCheck, s3_client_for
from realstack.config import HarnessConfig
from realstack.stamps import RunNames

from tests.harness.helpers import names_for
from tests.harness.nested import EXAMPLES, run_nested_pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# pytest's short summary (-rA): "PASSED examples/bucket_probe.py::test_x" (or FAILED, ERROR).
_SUMMARY_LINE = re.compile(r"^(PASSED|FAILED|ERROR) \S*::(test\w+)", re.MULTILINE)

# How the object got there -> the prefix of the probe's two tests: the one that writes it, and
# the next one, which must find the bucket empty.
WRITTEN_THEN_GONE = {
    "the-apps-own-client-behind-an-uncounted-asgi-client": "test_1",
    "own-client-after-the-harness-client-served-a-request": "test_2",
    "own-client-given-only-the-bucket-name": "test_3",
    "own-client-given-only-the-raw-targets": "test_4",
}


@dataclass(frozen=True)
class ProbeRun:
    route: str  # how the emptiness is checked: "listing" (any S3) or "write-trace" (embedded)
    output: str
    outcomes: dict[str, list[str]]  # test name -> its PASSED / FAILED / ERROR lines' words
    listings: dict[str, int]  # test name -> bucket listings while it ran, teardown included


def _s3_route(config: HarnessConfig, route: str) -> dict[str, str]:
    """The nested run's S3: an endpoint URL (another server, as far as it knows: a LIST after
    each test that can see the bucket), or the launcher's own variables with its write trace
    (a LIST only after the server stored or deleted something)."""
    if route == "listing":
        return {}
    if config.s3_write_trace is None or config.s3 is None or config.s3.endpoint_url is None:
        pytest.fail("this tier runs on the embedded launcher's S3, which gives a write trace")
    port = str(urlsplit(config.s3.endpoint_url).port)
    return {
        "TEST_S3_ENDPOINT_URL": "",
        "MINIO_HOST": "127.0.0.1",
        "MINIO_PORT": port,
        "TEST_S3_WRITE_TRACE": config.s3_write_trace,
    }


@pytest_asyncio.fixture(scope="module", params=["listing", "write-trace"])
async def probe_run(
    request: pytest.FixtureRequest,
    harness_config: HarnessConfig,
    run_names: RunNames,
    tmp_path_factory: pytest.TempPathFactory,
) -> ProbeRun:
    route: str = request.param
    reports = tmp_path_factory.mktemp("bucket-probe")
    done = await run_nested_pytest(
        harness_config,
        ["-q", "-rA", str(EXAMPLES / "bucket_probe.py")],
        run_id=names_for(run_names, f"bucket-{route[0]}").run_id,
        env={"PROBE_REPORT_DIR": str(reports), **_s3_route(harness_config, route)},
    )
    output = done.stdout + done.stderr
    outcomes: dict[str, list[str]] = {}
    for outcome, test in _SUMMARY_LINE.findall(output):
        outcomes.setdefault(test, []).append(outcome)
    report = json.loads(await asyncio.to_thread(Path(reports, "controller.json").read_text))
    listings = {
        nodeid.rsplit("::", 1)[-1]: count for nodeid, count in report["bucket_listings"].items()
    }
    return ProbeRun(route, output, outcomes, listings)


def _probe_tests() -> list[str]:
    source = (EXAMPLES / "bucket_probe.py").read_text()
    return re.findall(r"^(?:async )?def (test\w+)", source, re.MULTILINE)


def test_every_test_of_the_probe_ran_and_passed(probe_run: ProbeRun) -> None:
    assert probe_run.outcomes == {name: ["PASSED"] for name in _probe_tests()}, probe_run.output


@pytest.mark.parametrize("pair", WRITTEN_THEN_GONE.values(), ids=WRITTEN_THEN_GONE.keys())
def test_an_object_written_in_a_test_is_gone_when_the_next_test_starts(
    probe_run: ProbeRun, pair: str
) -> None:
    [writer] = [name for name in _probe_tests() if name.startswith(f"{pair}_writes")]
    reader = f"{pair}_the_next_test_finds_the_bucket_empty"

    assert probe_run.outcomes.get(writer) == ["PASSED"], probe_run.output
    assert probe_run.outcomes.get(reader) == ["PASSED"], probe_run.output


@pytest.mark.parametrize(
    "test", ["test_uses_only_the_database", "test_uses_only_the_engine", "test_uses_no_service"]
)
def test_a_test_that_cannot_see_the_bucket_pays_no_listing(probe_run: ProbeRun, test: str) -> None:
    assert probe_run.outcomes.get(test) == ["PASSED"], probe_run.output
    assert probe_run.listings.get(test, 0) == 0


def test_a_test_that_can_see_the_bucket_and_wrote_nothing_pays_one_listing_or_none(
    probe_run: ProbeRun,
) -> None:
    """With the write trace, none: the test before it found the bucket empty, and the server has
    stored nothing since."""
    expected = {"listing": 1, "write-trace": 0}[probe_run.route]
    assert probe_run.listings.get("test_sees_the_bucket_and_writes_nothing", 0) == expected


async def test_an_emptiness_check_the_server_refuses_is_asked_again_through_boto3(
    harness_config: HarnessConfig, run_names: RunNames
) -> None:
    assert harness_config.s3 is not None
    client = s3_client_for(harness_config.s3)
    through_boto3: list[str] = []
    client.meta.events.register(
        "before-call.s3.ListObjectsV2", lambda **_: through_boto3.append("list")
    )
    # Its presigned URLs carry a wrong signature: the server answers 403, as to an expired one.
    wrong_secret = replace(harness_config.s3, secret_key="not-the-secret")
    names = names_for(run_names, "refused")
    async with BucketJanitor(client, names) as janitor:
        janitor.emptiness = EmptinessCheck(s3_client_for(wrong_secret), names.bucket)
        empty_before = await asyncio.to_thread(janitor.is_empty)
        await asyncio.to_thread(client.put_object, Bucket=names.bucket, Key="k", Body=b"")
        empty_after_a_put = await asyncio.to_thread(janitor.is_empty)
        asked = list(through_boto3)

    assert (empty_before, empty_after_a_put) == (True, False)
    assert asked == ["list", "list"]


def test_with_a_proxy_in_the_environment_the_check_leaves_the_listing_to_boto3(
    s3_client: S3Client, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")

    assert EmptinessCheck(s3_client, s3_bucket).answer() is None


async def test_a_listing_sent_again_before_its_answer_was_read_answers_for_the_state_now(
    s3_client: S3Client, s3_bucket: str
) -> None:
    check = EmptinessCheck(s3_client, s3_bucket)
    try:
        await asyncio.to_thread(check.send)  # while the bucket is empty; never read
        await asyncio.to_thread(s3_client.put_object, Bucket=s3_bucket, Key="k", Body=b"")
        await asyncio.to_thread(check.send)
        answer = await asyncio.to_thread(check.answer)
    finally:
        check.close()

    assert answer is False
