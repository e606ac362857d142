"""``--executor ray --address`` against a real token-auth head on 127.0.0.1 (issue 17, point 7).

The head and every driver run in subprocesses with a temporary ``HOME``, so the
user's ``~/.ray`` (whose ``auth_token`` would turn token auth on for their next
``ray start --head``) is neither read nor written.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_EXPERIMENT
from tests.extras import require
from tests.test_ray_executor import free_port, short_temp_dir, stop

ROOT = Path(__file__).resolve().parent.parent


def isolated_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return dict(env, HOME=str(home), RAY_USAGE_STATS_ENABLED="0")


@pytest.mark.slow
def test_address_connects_to_a_token_auth_head_or_exits_2_with_the_remedy(tmp_path, tmp_path_factory):
    require("ray")
    head_home, empty_home = tmp_path / "head-home", tmp_path / "empty-home"
    (head_home / ".ray").mkdir(parents=True)
    empty_home.mkdir()
    (head_home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    user_token = Path.home() / ".ray" / "auth_token"
    before = user_token.read_bytes() if user_token.exists() else None
    temp_dir = short_temp_dir(tmp_path_factory.getbasetemp())
    port = free_port()
    log = tmp_path / "head.log"
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address", "127.0.0.1"]
    command += ["--port", str(port), "--num-cpus", "1", "--include-dashboard=false", "--block"]
    command += ["--temp-dir", str(temp_dir), "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port())]
    with open(log, "w") as sink:  # RAY_AUTH_MODE unset and a token in HOME: Ray turns token auth on
        head = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=isolated_env(head_home),
                                start_new_session=True)  # fmt: skip
    try:
        import time

        deadline = time.time() + 90
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert "Token authentication is enabled" in log.read_text()
        grid = tmp_path / "grid.toml"
        grid.write_text(TINY_EXPERIMENT.format(name="tok", steps=150, seeds=1, eval_every=150))
        run = [sys.executable, "-m", "dqnbench", "run", "--grid", str(grid), "--executor", "ray"]
        run += ["--address", f"127.0.0.1:{port}", "--quiet", "--no-plots"]

        driver_home = tmp_path / "driver-home"  # the head's token copied here, as the remedy says
        (driver_home / ".ray").mkdir(parents=True)
        (driver_home / ".ray" / "auth_token").write_text((head_home / ".ray" / "auth_token").read_text())
        ok = subprocess.run([*run, "--out", str(tmp_path / "a")], env=isolated_env(driver_home), cwd=ROOT,
                            capture_output=True, text=True, timeout=240)  # fmt: skip
        assert ok.returncode == 0, ok.stderr[-3000:]

        refused = subprocess.run([*run, "--out", str(tmp_path / "b")], env=isolated_env(empty_home), cwd=ROOT,
                                 capture_output=True, text=True, timeout=240)  # fmt: skip
        assert refused.returncode == 2, refused.stderr[-3000:]
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("dqnbench: error:") and "ray get-auth-token" in last and "~/.ray/auth_token" in last
        assert not (empty_home / ".ray").exists()  # the driver wrote no token
    finally:
        stop([head])
    after = user_token.read_bytes() if user_token.exists() else None
    assert after == before  # the user's ~/.ray untouched
