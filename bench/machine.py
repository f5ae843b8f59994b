"""Keep other people's work on this shared 2-core machine out of the figures, and show when it got in.

Other engineers run tests and type checks here. One of their processes landing on the server's core turns
a 0.06 ms p99 into 3-4 ms, for NSD as much as for mcsdns. Two defences:

* before each run, wait (bounded) until processes other than ours use little CPU;
* during each run, add up the CPU time other processes used (from ``/proc/<pid>/stat``), and how long
  the server's threads sat runnable but not running (run-queue delay, ``/proc/<pid>/task/*/schedstat``).
  A run where others used more than a tenth of a core, or (fixed-rate runs the server keeps up with) where
  the server waited for its core more than 2 % of the time, was disturbed and is repeated.

Why both: the CPU sum misses short-lived processes (a test suite spawning subprocesses), and it is the
run-queue delay that tracks the p99 (quiet: ~0.3 % and p99 ~0.06 ms; a busy neighbour: 15-20 % and p99
3-4 ms, for NSD as for mcsdns). But a saturated server, or a thread-per-query one like dnslib, delays
itself, so run-queue delay only counts when the server has idle time to spare. System-wide ``/proc/stat``
is not used: in this VM its busy time disagrees with the processes' own CPU times by more than the whole
server's usage, so "total minus ours" is meaningless here.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from servers import group_pids

TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (process group, CPU seconds so far) for every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = (int(fields[2]), (int(fields[11]) + int(fields[12])) * TICK)
    return out


def _other_delta(
    before: dict[int, tuple[int, float]], after: dict[int, tuple[int, float]], ours: set[int]
) -> float:
    used = 0.0
    for pid, (pgid, cpu) in after.items():
        if pgid not in ours:
            used += cpu - before.get(pid, (pgid, 0.0))[1]  # a new process counts from zero
    return used


def other_cpu(interval: float, ours: set[int]) -> float:
    """Cores' worth of CPU used over ``interval`` by processes outside the process groups ``ours``."""
    before = _processes()
    time.sleep(interval)
    return _other_delta(before, _processes(), ours) / interval


def wait_quiet(max_wait: float, ours: set[int], threshold: float = 0.1) -> float:
    """Wait (bounded by ``max_wait``) until other processes use < ``threshold`` cores; return the last
    measurement."""
    deadline = time.monotonic() + max_wait
    used = other_cpu(0.5, ours)
    while used >= threshold and time.monotonic() < deadline:
        used = other_cpu(1.0, ours)
    return used


def run_queue_delay(pgid: int) -> float:
    """Seconds the threads of the process group have spent runnable but waiting for a CPU."""
    total = 0
    for pid in group_pids(pgid):
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


@dataclass
class Disturbance:
    foreign: float = 0.0  # CPU other processes used during the run, in cores (0.25 = a quarter of one)
    waited: float = 0.0  # the server's run-queue delay, as a share of the run's wall time


@contextmanager
def disturbance(ours: set[int], server_pgid: int) -> Iterator[Disturbance]:
    """Measure, while the block runs, other processes' CPU and the server's wait for its core."""
    result = Disturbance()
    before, delay0, start = _processes(), run_queue_delay(server_pgid), time.monotonic()
    yield result
    wall = max(1e-3, time.monotonic() - start)
    result.foreign = _other_delta(before, _processes(), ours) / wall
    result.waited = (run_queue_delay(server_pgid) - delay0) / wall


T = TypeVar("T")


def closed_loop_score(args: argparse.Namespace) -> Callable[[object, Disturbance], float]:
    """How disturbed a closed-loop run was: other processes' CPU against ``--max-foreign``. The server's
    wait for its core says nothing there (a saturated server delays itself), so it is not counted."""

    def score(_: object, seen: Disturbance) -> float:
        seen.waited = math.nan
        return float(seen.foreign / args.max_foreign)

    return score


def least_disturbed(
    measure: Callable[[], T],
    *,
    pid: int,
    ours: set[int],
    args: argparse.Namespace,
    score: Callable[[T, Disturbance], float] | None = None,
    prepare: Callable[[], object] | None = None,
) -> tuple[T, Disturbance]:
    """``measure`` on a quiet machine: wait for quiet (``--quiet-wait``), run it while watching other
    processes and the server ``pid``, and repeat it (at most ``--retries`` times) while ``score`` says it was
    disturbed (above 1; default ``closed_loop_score``); keep the least disturbed run. Waiting and repeating
    share one time budget (``args.deadline``), so a machine that never gets quiet still ends. ``prepare``
    runs before each attempt, outside the watched window (e.g. a fresh query file)."""
    rate = score or closed_loop_score(args)
    best: tuple[float, T, Disturbance] | None = None
    for attempt in range(1 + args.retries):
        spare = args.deadline - time.monotonic()
        if attempt and spare <= 0:
            print("    out of --budget; keeping the least disturbed run", file=sys.stderr, flush=True)
            break
        if prepare is not None:
            prepare()
        wait_quiet(max(0.0, min(args.quiet_wait, spare)), ours)
        with disturbance(ours, pid) as seen:
            value = measure()
        disturbed = rate(value, seen)
        if best is None or disturbed < best[0]:
            best = (disturbed, value, seen)
        if disturbed <= 1.0:
            break
        waited = "" if math.isnan(seen.waited) else f", server waited {seen.waited:.1%} for its core"
        print(
            f"    disturbed (other processes {seen.foreign:.2f} cores{waited}); repeating the run",
            file=sys.stderr,
            flush=True,
        )
    assert best is not None
    return best[1], best[2]


# Guest halt polling (Linux's cpuidle-haltpoll driver, Documentation/virt/guest-halt-polling.rst): before
# an idle vCPU halts, it polls for this long for work to arrive. A halted vCPU is woken by the hypervisor,
# which on some VMs takes milliseconds; KVM's own default polls 200 us on the host side for that reason.
# A VM booted with ``haltpoll.guest_halt_poll_ns=0`` (and the host not polling) halts at once, and a
# fixed-rate run, idle between queries, then measures those wake-ups: at 5,000 qps a p99 of 1.1-1.8 ms
# for Unbound, mcsdns and a server doing no work alike (floor_server.py --probe), and 0.07-0.3 ms with
# 200 us of polling (2026-12-07, a Firecracker VM booted so).
HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
HALT_POLL_NS = 200_000  # KVM's default halt_poll_ns


def halt_poll_ns() -> int | None:
    """This guest's halt polling, in ns; None where it cannot be set (no cpuidle-haltpoll, not root)."""
    try:
        value = int(HALT_POLL.read_text().strip())
    except (OSError, ValueError):
        return None
    return value if os.access(HALT_POLL, os.W_OK) else None


@contextmanager
def halt_polling(ns: int) -> Iterator[None]:
    """Guest halt polling at ``ns`` for the block, then as it was (also when the block raises)."""
    before = HALT_POLL.read_text().strip()
    HALT_POLL.write_text(str(ns))
    try:
        yield
    finally:
        HALT_POLL.write_text(before)
