"""(b) A CPU cap exposes a timing assumption.

Code that "surely finishes in well under a second" often does on a developer's
idle laptop and then times out on a busy CI runner. ``cpu=0.2`` gives the test
20% of one CPU (20 ms of CPU time per 100 ms), like a heavily loaded machine, so
such assumptions break reliably instead of once a week.

Here the same work costs 0.15 s of CPU time but takes about 5x as long on the
clock: time.process_time() counts CPU time, time.perf_counter() wall time.
"""

from __future__ import annotations

import hashlib
import time

import pytest

CPU_WORK_S = 0.15


def crunch(cpu_seconds: float) -> None:
    """Busy work: hash until this process has used ``cpu_seconds`` of CPU time."""
    start = time.process_time()
    data = b"pytest-isolate"
    while time.process_time() - start < cpu_seconds:
        data = hashlib.sha256(data).digest()


@pytest.mark.isolated(cpu=0.2)
def test_cpu_cap_stretches_wall_time(sandbox: None) -> None:
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    crunch(CPU_WORK_S)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start

    # Expect ~5x (1 / 0.2); a margin keeps the demo stable on a noisy machine.
    assert wall / cpu > 3, f"wall {wall:.3f} s vs CPU {cpu:.3f} s: the CPU cap did not apply"
    # A test that assumed "this takes about as long as its CPU time" would now fail,
    # and the report's user_properties show isolate_throttled_s / isolate_nr_throttled.
