"""A run cancelled with SIGTERM (a CI job cancelled) ends like Ctrl-C: a server that a test of
it had paused (server_faults) is resumed, and pytest says it was interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from realstack.config import HarnessConfig
from realstack.process import is_stopped, poll_until, resume_tree
from realstack.stamps import RunNames

from tests.harness.helpers import names_for
from tests.harness.nested import (
    EXAMPLES,
    REPO_ROOT,
    TIER_CONFIG,
    clean_environment,
    service_environment,
)

DEADLINE_S = 60.0


def test_sigterm_while_a_server_is_paused_resumes_it_and_ends_the_run_as_interrupted(
    harness_config: HarnessConfig, run_names: RunNames, tmp_path: Path
) -> None:
    marker = tmp_path / "paused.json"
    env = clean_environment(harness_config.project) | service_environment(harness_config)
    env |= {
        harness_config.project.run_id_variable: names_for(run_names, "sigterm").run_id,
        "PROBE_MARKER": str(marker),
    }
    argv = [sys.executable, "-m", "pytest", "-c", str(TIER_CONFIG), "-p", "no:cacheprovider"]
    child = subprocess.Popen(
        [*argv, "-v", str(EXAMPLES / "sigterm_probe.py")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    leader = None
    try:
        assert poll_until(marker.exists, timeout_s=DEADLINE_S), "the probe never paused the server"
        paused = json.loads(marker.read_text())
        leader = paused["leader"]
        assert is_stopped(leader)  # the probe's pause took effect

        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=DEADLINE_S)

        assert not is_stopped(leader), output  # resumed on the way out
        assert child.returncode == 2, output  # pytest's "interrupted"
        assert "KeyboardInterrupt" in output
        assert "INTERNALERROR" not in output
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if leader is not None and is_stopped(leader):
            resume_tree(leader)  # never leave this tier's server paused
