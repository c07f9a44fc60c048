"""Which workers stand by for the gpu queue: the CPU workers of ``latentfarm worker --cpu N``, unless the user
named the queues."""

from __future__ import annotations

from scheduler.supervisor import plan_workers


def test_cpu_workers_stand_by_for_the_gpu_queue_unless_the_queues_are_given() -> None:
    planned = plan_workers(["0"], 2, None, "INFO", None, env={}, host="h")
    assert [(w.name, "--gpu-standby" in w.argv) for w in planned] == [
        ("gpu0@h", False), ("cpu0@h", True), ("cpu1@h", True)]
    assert not any("--gpu-standby" in w.argv for w in plan_workers([], 2, "cpu", "INFO", None, env={}, host="h"))
