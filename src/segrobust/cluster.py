"""Jobs a SLURM cluster can never run, found before anything is submitted.

A job asking for more CPUs than any node of its partition has, or a longer time than the
partition allows, is accepted by sbatch and then pends forever (reason ``PartitionConfig`` or
``PartitionTimeLimit``) while Snakemake waits without a word; too much memory or a GPU on a
cluster without GPUs is rejected with a message that does not say which setting to change.
:func:`unrunnable` compares each job's request with the nodes ``sinfo`` lists and says what to
change instead.
"""

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

# sinfo, one line per node and partition: partition (default marked *), CPUs, memory (MB),
# generic resources, the partition's time limit
SINFO_FORMAT = "%P|%c|%m|%G|%l"
# what to change when a rule's (or group's) jobs do not fit (default: --set-resources RULE:...)
HINTS: dict[str, str] = {
    "preprocess": "fewer subjects at once per submission: --resources preprocess_jobs=N "
    "(each takes 1 CPU and the preprocess_subject memory)",
    "train_model": "config resources.train_mem_mb / resources.train_runtime",
}
GPU_HINT = "a cluster without GPUs: --configfile config/no_gpu.yaml"


@dataclass(frozen=True)
class Node:
    """One node as a partition offers it; ``time_limit`` in minutes (None: unlimited)."""

    partition: str
    cpus: int
    mem_mb: int
    gpus: int
    time_limit: int | None


@dataclass(frozen=True)
class Request:
    """What one submission asks for: ``name`` is a rule or group, ``runtime`` in minutes."""

    name: str
    partition: str | None
    cpus: int
    mem_mb: int
    gpus: int
    runtime: int | None


def _gpus(gres: str) -> int:
    return sum(int(m[1]) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def _minutes(limit: str) -> int | None:
    """SLURM's [days-]hours:minutes:seconds, minutes:seconds or minutes; None for infinite."""
    if limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:  # minutes alone
        parts = [parts[0], 0]
    hours, minutes, seconds = [0, *parts][-3:]
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


def parse_sinfo(text: str) -> tuple[list[Node], str | None]:
    """Nodes and the default partition from ``sinfo -h -N -o SINFO_FORMAT`` output."""
    nodes, default = [], None
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, cpus, mem, gres, limit = line.split("|")
        if partition.endswith("*"):
            partition = default = partition[:-1]
        cpus, mem = int(cpus.rstrip("+")), int(mem.rstrip("+"))
        nodes.append(Node(partition, cpus, mem, _gpus(gres), _minutes(limit)))
    return nodes, default


def query_sinfo() -> tuple[list[Node], str | None]:
    """The cluster's nodes and default partition, from ``sinfo``."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as err:
        raise RuntimeError(f"cannot list the cluster's nodes with sinfo: {err}") from err
    return parse_sinfo(out.stdout)


def _fits(node: Node, r: Request) -> bool:
    return (
        node.cpus >= r.cpus
        and node.mem_mb >= r.mem_mb
        and node.gpus >= r.gpus
        and (node.time_limit is None or r.runtime is None or node.time_limit >= r.runtime)
    )


def unrunnable(
    requests: Iterable[Request], nodes: list[Node], default_partition: str | None
) -> list[str]:
    """One message per distinct request no node of its partition can ever run."""
    problems = []
    for r in dict.fromkeys(requests):
        partition = r.partition or default_partition
        pool = [n for n in nodes if n.partition == partition]
        if any(_fits(n, r) for n in pool):
            continue
        if not pool:
            known = sorted({n.partition for n in nodes})
            problems.append(f"{r.name}: partition {partition!r} not found (sinfo lists {known})")
            continue
        limit = max((n.time_limit for n in pool), key=lambda t: float("inf") if t is None else t)
        hints = [HINTS.get(r.name, f"--set-resources {r.name}:mem_mb=…/runtime=…")]
        hints += [GPU_HINT] if r.gpus and not any(n.gpus for n in pool) else []
        hints += ["a partition with bigger nodes (SBATCH_PARTITION)"]
        problems.append(
            f"{r.name} asks for {r.cpus} CPUs, {r.mem_mb} MB, {r.gpus} GPUs, "
            f"{r.runtime} min; the largest nodes of partition {partition!r} have "
            f"{max(n.cpus for n in pool)} CPUs, {max(n.mem_mb for n in pool)} MB, "
            f"{max(n.gpus for n in pool)} GPUs, time limit "
            f"{'none' if limit is None else f'{limit} min'}. Change: {'; or '.join(hints)}"
        )
    return problems


def request_of(job) -> Request:
    """The request of a Snakemake job or group job (what the slurm executor passes to sbatch)."""
    res = job.resources
    cpus = res.get("cpus_per_task") or job.threads
    return Request(
        name=job.groupid if job.is_group() else job.name,
        partition=res.get("slurm_partition"),
        cpus=int(cpus),
        mem_mb=int(res.get("mem_mb", 0)),
        gpus=int(res.get("gpu", 0) or 0),
        runtime=res.get("runtime"),
    )
