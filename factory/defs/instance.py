"""The Dagster instance ``factory ui`` runs on: a ``dagster.yaml`` whose run queue lets runs of different
specs go at once (up to ``max_concurrent_runs``) but never two runs of the same spec's partition."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from factory.defs.tags import PARTITION_TAG, SHARD_TAG

__all__ = ["PARTITION_TAG", "SHARD_TAG", "ensure_instance_config", "instance_config", "tag_concurrency_limits"]

DEFAULT_MAX_CONCURRENT_RUNS = 4


def tag_concurrency_limits() -> list[dict[str, Any]]:
    """At most one run per spec partition, and one per shard of a sharded spec (its shards run side by side)."""
    return [{"key": tag, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
            for tag in (PARTITION_TAG, SHARD_TAG)]


def instance_config(max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS) -> dict[str, Any]:
    """The instance settings: the daemon's queued run coordinator with at most ``max_concurrent_runs`` runs in
    progress, and at most one per value of the ``dagster/partition`` tag (one run per spec at a time; the
    others wait in the queue rather than on the spec's lease in the store) and of the shard tag."""
    return {"run_coordinator": {
        "module": "dagster._core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"max_concurrent_runs": max_concurrent_runs, "tag_concurrency_limits": tag_concurrency_limits()}}}


def max_concurrent_runs_from_env(env: Mapping[str, str] | None = None) -> int:
    """``$FACTORY_MAX_CONCURRENT_RUNS`` (default 4; -1: no limit, as Dagster reads it)."""
    env = os.environ if env is None else env
    raw = env.get("FACTORY_MAX_CONCURRENT_RUNS", "").strip()
    if not raw:
        return DEFAULT_MAX_CONCURRENT_RUNS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"FACTORY_MAX_CONCURRENT_RUNS must be a whole number, not {raw!r}") from None
    if value < -1:
        raise ValueError(f"FACTORY_MAX_CONCURRENT_RUNS must be -1 (no limit), 0 or more, not {value}")
    return value


def ensure_instance_config(home: Path, max_concurrent_runs: int | None = None) -> bool:
    """Write ``home/dagster.yaml`` with :func:`instance_config` (``max_concurrent_runs``, default from
    :func:`max_concurrent_runs_from_env`), creating ``home`` if need be. A ``dagster.yaml`` (or
    ``dagster.yml``) already there is the user's own and is left alone. Returns whether it wrote one."""
    if (home / "dagster.yaml").exists() or (home / "dagster.yml").exists():
        return False
    limit = max_concurrent_runs_from_env() if max_concurrent_runs is None else max_concurrent_runs
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        "# written by `factory ui`: one run per spec partition at a time (edit freely; it is not rewritten)\n"
        + yaml.safe_dump(instance_config(limit), sort_keys=False), encoding="utf-8")
    return True
