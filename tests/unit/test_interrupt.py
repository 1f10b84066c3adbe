"""Ctrl-C reaches the launcher's loop even when its KeyboardInterrupt was raised inside a
finaliser, where Python drops it (the race behind a launcher that ignored a Ctrl-C)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, signal, time
from melissa.launcher import interrupt

interrupt.install()

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here; its KeyboardInterrupt is dropped

Finalised()
print("survived the signal")
try:
    interrupt.check()
except KeyboardInterrupt:
    print("check raised")
"""


def test_a_signal_lost_in_a_finaliser_still_interrupts() -> None:
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert "Exception ignored in" in run.stderr and "KeyboardInterrupt" in run.stderr
    assert run.stdout.splitlines() == ["survived the signal", "check raised"]
