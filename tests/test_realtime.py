"""Real-time priority for the runtime's threads: checked values, refusals reported, never raised."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from edge.cli import build_parser
from edge.runtime.realtime import check_priority, max_priority

pytestmark = pytest.mark.skipif(not max_priority(), reason="no SCHED_FIFO on this system")

UNPRIVILEGED = """
import os, resource, threading
from edge.runtime.realtime import current_priority, enter_realtime
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)          # nobody: root's CAP_SYS_NICE is gone
resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
out = []
def thread():
    out.append((enter_realtime(5), current_priority()))
t = threading.Thread(target=thread)
t.start()
t.join()
print(repr(out[0]))
"""


def test_priorities_outside_the_systems_range_are_refused():
    top = max_priority()
    assert check_priority(1) == 1 and check_priority(top) == top
    for bad in (0, -3, top + 1):
        with pytest.raises(ValueError, match=f"between 1 and {top}"):
            check_priority(bad)


def test_the_cli_takes_zero_for_off_and_refuses_a_priority_out_of_range(capsys):
    parser = build_parser()
    assert parser.parse_args(["run", "--bundle", "b", "--port", "p"]).realtime_priority == 0
    assert parser.parse_args(["run", "--bundle", "b", "--port", "p", "--realtime-priority", "20"]).realtime_priority == 20
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--bundle", "b", "--port", "p", "--realtime-priority", str(max_priority() + 1)])
    assert "real-time priority is between 1 and" in capsys.readouterr().err


def test_a_process_without_the_right_gets_a_reason_and_keeps_running_at_ordinary_priority(tmp_path):
    done = subprocess.run([sys.executable, "-c", UNPRIVILEGED], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": ":".join(sys.path)})
    assert done.returncode == 0, done.stderr
    reason, priority = ast.literal_eval(done.stdout.strip())
    assert priority == 0
    assert "not permitted to use real-time priority 5" in reason and "CAP_SYS_NICE" in reason
