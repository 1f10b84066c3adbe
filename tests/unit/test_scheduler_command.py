"""run_command on real processes: retries with back-off on transient failures, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from melissa.launcher.schedulers.command import CommandError, RetryPolicy, run_command

TRANSIENT = re.compile("Socket timed out")
# Fails with a transient error until it has run `n` times, then prints ok.
FLAKY = ('n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > count; '
         'if [ $n -lt {n} ]; then echo "squeue: error: Socket timed out on send/recv operation" >&2;'
         ' exit 1; fi; echo ok')


def runs(tmp_path: Path) -> int:
    return int((tmp_path / "count").read_text())


def test_transient_failures_are_retried_with_exponential_back_off(tmp_path: Path) -> None:
    delays: list[float] = []
    out = run_command(["sh", "-c", FLAKY.format(n=4)], TRANSIENT, cwd=tmp_path,
                      sleep=delays.append)
    assert out == "ok\n" and runs(tmp_path) == 4
    assert delays == [0.5, 1.0, 2.0]


def test_retries_end_with_the_last_error(tmp_path: Path) -> None:
    delays: list[float] = []
    policy = RetryPolicy(attempts=3, first_delay_s=0.1, max_delay_s=0.15)
    with pytest.raises(CommandError) as info:
        run_command(["sh", "-c", FLAKY.format(n=99)], TRANSIENT, cwd=tmp_path, policy=policy,
                    sleep=delays.append)
    assert runs(tmp_path) == 3 and delays == [0.1, 0.15]
    assert str(info.value) == (
        f"`sh -c {FLAKY.format(n=99)!r}` exited with status 1 (3 tries): "
        "squeue: error: Socket timed out on send/recv operation")
    assert info.value.returncode == 1


def test_other_failures_raise_at_once(tmp_path: Path) -> None:
    delays: list[float] = []
    script = 'echo "sbatch: error: invalid partition specified: nope" >&2; exit 1'
    with pytest.raises(CommandError) as info:
        run_command(["sh", "-c", script], TRANSIENT, sleep=delays.append)
    assert delays == []
    assert "exited with status 1: sbatch: error: invalid partition specified: nope" in str(
        info.value)


def test_a_hung_command_is_killed_and_retried() -> None:
    delays: list[float] = []
    policy = RetryPolicy(attempts=2, timeout_s=0.2)
    with pytest.raises(CommandError, match=r"`sleep 30` failed \(2 tries\): no answer within "
                                           r"0.2 s"):
        run_command(["sleep", "30"], TRANSIENT, policy=policy, sleep=delays.append)
    assert delays == [0.5]


def test_a_missing_command_says_so() -> None:
    with pytest.raises(CommandError, match="no-such-sbatch not found on PATH: is the "
                                           "scheduler's client installed here") as info:
        run_command(["no-such-sbatch", "--parsable"], TRANSIENT)
    assert info.value.returncode is None


def test_environment_and_output() -> None:
    out = run_command(["sh", "-c", 'echo "$FOO"; echo noise >&2'], TRANSIENT,
                      env={"FOO": "bar baz", "PATH": "/usr/bin:/bin"})
    assert out == "bar baz\n"


def test_delays_are_capped() -> None:
    policy = RetryPolicy(first_delay_s=1.0, max_delay_s=8.0)
    assert [policy.delay(r) for r in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
