"""The asset checks' verdicts: budget, class balance, samples per class, near-duplicate rate, evaluation.

A check that cannot apply is not evaluated at all (Dagster shows it as skipped), never passed vacuously.
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from factory.spec import Spec


def budget_check(s: Spec, spent: dict[str, float]) -> AssetCheckResult:
    b = s.budget
    over = [f"{name} {spent[key]:.4g} > {cap}" for name, key, cap in
            (("requests", "requests", b.max_requests), ("tokens", "tokens", b.max_tokens), ("usd", "usd", b.max_usd))
            if cap is not None and spent[key] > cap]
    return AssetCheckResult(check_name="budget_not_exceeded", passed=not over,
                            metadata={"spent": MetadataValue.json(spent), "over": ", ".join(over) or "none"})


def balance_check(s: Spec, per_class: dict[str, int], tolerance: float = 0.2) -> AssetCheckResult:
    counts = [per_class.get(c, 0) for c in s.class_names]
    spread = (max(counts) - min(counts)) / max(max(counts), 1)
    return AssetCheckResult(check_name="classes_balanced", passed=spread <= tolerance,
                            severity=AssetCheckSeverity.WARN,
                            metadata={"per_class": MetadataValue.json(per_class), "spread": spread,
                                      "tolerance": tolerance})


def min_samples_check(s: Spec, kept: dict[str, int], share: float = 0.5) -> AssetCheckResult:
    need = max(1, int(share * s.budget.samples_per_class))
    short = {c: kept.get(c, 0) for c in s.class_names if kept.get(c, 0) < need}
    return AssetCheckResult(check_name="min_samples_per_class", passed=not short,
                            metadata={"minimum": need, "kept": MetadataValue.json(kept),
                                      "short": MetadataValue.json(short)})


def near_dup_check(dropped: dict[str, int], generated: int, threshold: float = 0.2) -> AssetCheckResult:
    rate = dropped.get("near_dup", 0) / max(generated, 1)
    return AssetCheckResult(check_name="near_duplicate_rate", passed=rate <= threshold,
                            severity=AssetCheckSeverity.WARN, metadata={"rate": rate, "threshold": threshold})


def evaluation_check(evaluations: int) -> AssetCheckResult:
    """Only evaluated when the spec names a test set (else the check is skipped)."""
    return AssetCheckResult(check_name="evaluation_present", passed=evaluations > 0,
                            metadata={"evaluations": evaluations})
