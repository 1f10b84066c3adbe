"""`run_command`: the one way Melissa runs a scheduler command (sbatch, squeue, oarsub, ...).

A busy controller must not end a study: a failure whose output matches the scheduler's
`transient` pattern (or a command that hangs past its timeout) is retried with exponential
back-off; any other failure raises at once, naming the command, its exit status and its stderr.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from melissa.errors import SchedulerError

log = logging.getLogger("melissa.launcher")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    first_delay_s: float = 0.5  # before the second try; doubled before each next one
    max_delay_s: float = 8.0
    timeout_s: float = 60.0  # one try longer than this is killed and counts as transient

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the second try)."""
        return float(min(self.first_delay_s * 2 ** (retry - 1), self.max_delay_s))


DEFAULT_RETRY = RetryPolicy()


class CommandError(SchedulerError):
    """A scheduler command failed for good; `returncode` is None when it could not run at all."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str, attempts: int):
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        tries = f" ({attempts} tries)" if attempts > 1 else ""
        how = "failed" if returncode is None else f"exited with status {returncode}"
        super().__init__(f"`{shlex.join(self.argv)}` {how}{tries}: {output or '(no output)'}")


def run_command(
    argv: Sequence[str],
    transient: re.Pattern[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    policy: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run `argv` (no shell) and return its stdout; retry transient failures; raise CommandError.

    `transient` is searched in the stderr and stdout of a failed try. `env` replaces the whole
    environment (it is how sbatch passes a job its environment).
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            proc = subprocess.run(
                list(argv), env=None if env is None else dict(env), cwd=cwd,
                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                timeout=policy.timeout_s,
            )
        except FileNotFoundError:
            raise CommandError(
                argv, None, f"{argv[0]} not found on PATH: is the scheduler's client installed "
                "here, and is this a front-end node of the cluster?", attempt,
            ) from None
        except OSError as exc:
            raise CommandError(argv, None, str(exc), attempt) from None
        except subprocess.TimeoutExpired:
            returncode, output, retry = None, f"no answer within {policy.timeout_s:g} s", True
        else:
            if proc.returncode == 0:
                return proc.stdout
            returncode = proc.returncode
            output = (proc.stderr.strip() or proc.stdout.strip()).replace("\n", " | ")
            retry = bool(transient.search(proc.stderr) or transient.search(proc.stdout))
        if not retry or attempt == policy.attempts:
            raise CommandError(argv, returncode, output, attempt)
        delay = policy.delay(attempt)
        log.warning("`%s` failed (%s); retry %d of %d in %g s",
                    shlex.join(argv), output, attempt, policy.attempts - 1, delay)
        sleep(delay)
    raise AssertionError("unreachable: the last try returns or raises")
