"""A regorus Engine is pyo3 `unsendable`: dropped on a thread other than the one that
made it, it is leaked and pyo3 raises an "unraisable" RuntimeError. The cyclic garbage
collector runs on whatever thread allocates, so a `Loaded` caught in a reference cycle
can be collected in a `to_thread` worker (this failed a CI run: a decider from an
earlier test collected while the next test read its policy files in a worker). The
engine must be parked and dropped later on its own thread, with nothing raised."""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path
from typing import Any

from ztproxy.policy import loader
from ztproxy.policy.loader import load, release_parked

POLICY = "package t\nimport rego.v1\ndefault decision := false\n"


def _collect_on_worker(build: Any) -> list[str]:
    """Build garbage cycles holding engines, collect them on a worker thread, and
    return what reached sys.unraisablehook meanwhile."""
    seen: list[str] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(f"{u.exc_type.__name__}: {u.exc_value}")
    gc.disable()
    try:
        build()
        worker = threading.Thread(target=gc.collect)
        worker.start()
        worker.join(10)
    finally:
        gc.enable()
        sys.unraisablehook = old_hook
    return seen


def test_engine_in_a_cycle_collected_on_a_worker_is_parked_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "t.rego").write_text(POLICY, encoding="utf-8")
    release_parked()

    def build() -> None:
        for _ in range(3):
            box: list[Any] = [load([str(tmp_path)])]
            box.append(box)  # a cycle: only the collector can free it

    seen = _collect_on_worker(build)
    assert seen == []  # without the guard: "RuntimeError: ... unsendable ... another thread"
    assert len(loader._PARKED) == 3
    assert release_parked() == 3  # dropped here, on the thread that made them
    assert loader._PARKED == []


def test_parked_engines_of_another_thread_stay_parked(tmp_path: Path) -> None:
    """release_parked drops only the calling thread's engines; the owner drops its own."""
    (tmp_path / "t.rego").write_text(POLICY, encoding="utf-8")
    release_parked()
    made, collected, released = threading.Event(), threading.Event(), []

    def owner() -> None:
        box: list[Any] = [load([str(tmp_path)])]
        box.append(box)
        del box
        made.set()
        collected.wait(10)
        released.append(release_parked())

    thread = threading.Thread(target=owner)
    thread.start()
    made.wait(10)
    gc.collect()  # here, on the main thread: not the owner
    assert [o for o, _ in loader._PARKED] == [thread]
    assert release_parked() == 0  # not this thread's engine
    assert len(loader._PARKED) == 1
    collected.set()
    thread.join(10)
    assert released == [1]
    assert loader._PARKED == []


def test_an_engine_dropped_on_its_own_thread_is_not_parked(tmp_path: Path) -> None:
    (tmp_path / "t.rego").write_text(POLICY, encoding="utf-8")
    release_parked()
    box: list[Any] = [load([str(tmp_path)])]
    box.append(box)
    del box
    gc.collect()
    assert loader._PARKED == []
