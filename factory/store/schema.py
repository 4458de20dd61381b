"""The store's tables (a DuckLake schema: no keys, no constraints) and the typed records generation writes.

DuckLake enforces no PRIMARY KEY or UNIQUE constraint, so ``UNIQUE_KEYS`` names each table's key and the
store keeps it unique itself (inserts that skip existing keys, under the writer token).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import ClassVar

SCHEMA_VERSION = 4  # v4: the DuckLake store (dataset_versions, leases, writer_token; evaluations.snapshot_id)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS specs (
    spec_hash VARCHAR NOT NULL, name VARCHAR NOT NULL, path VARCHAR, yaml VARCHAR NOT NULL,
    spec JSON NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR NOT NULL, spec_hash VARCHAR NOT NULL, spec_name VARCHAR NOT NULL,
    method VARCHAR, model VARCHAR, status VARCHAR NOT NULL, started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ, requests INTEGER DEFAULT 0, cached INTEGER DEFAULT 0,
    prompt_tokens BIGINT DEFAULT 0, completion_tokens BIGINT DEFAULT 0, cost_usd DOUBLE DEFAULT 0,
    message VARCHAR);
CREATE TABLE IF NOT EXISTS elicitations (
    spec_hash VARCHAR NOT NULL, version INTEGER NOT NULL, source VARCHAR NOT NULL, model VARCHAR NOT NULL,
    digest VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS attribute_values (
    spec_hash VARCHAR NOT NULL, version INTEGER NOT NULL, dimension VARCHAR NOT NULL,
    class VARCHAR NOT NULL, value VARCHAR NOT NULL, source VARCHAR NOT NULL, kept BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS similar_classes (
    spec_hash VARCHAR NOT NULL, version INTEGER NOT NULL, class VARCHAR NOT NULL,
    similar_class VARCHAR NOT NULL, rank INTEGER NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS caf_decisions (
    spec_hash VARCHAR NOT NULL, version INTEGER NOT NULL, dimension VARCHAR NOT NULL,
    class VARCHAR NOT NULL, value VARCHAR NOT NULL, dropped BOOLEAN NOT NULL, relevant_to VARCHAR,
    reason VARCHAR, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_hash VARCHAR NOT NULL, method VARCHAR NOT NULL, messages JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS llm_requests (
    request_key VARCHAR NOT NULL, model VARCHAR NOT NULL, params JSON NOT NULL,
    prompt_hash VARCHAR NOT NULL, purpose VARCHAR NOT NULL, choices JSON NOT NULL,
    finish_reasons JSON, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cost_usd DOUBLE NOT NULL, latency_s DOUBLE, attempts INTEGER, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    sample_id VARCHAR NOT NULL, spec_hash VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
    class VARCHAR NOT NULL, text VARCHAR NOT NULL, attributes JSON NOT NULL, seed BIGINT NOT NULL,
    sample_index INTEGER NOT NULL, choice_index INTEGER NOT NULL, method VARCHAR NOT NULL,
    prompt_hash VARCHAR NOT NULL, request_key VARCHAR NOT NULL, model VARCHAR NOT NULL,
    params JSON NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cost_usd DOUBLE NOT NULL, is_refusal BOOLEAN NOT NULL, generated_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS filter_decisions (
    spec_hash VARCHAR NOT NULL, sample_id VARCHAR NOT NULL, filter VARCHAR NOT NULL,
    kept BOOLEAN NOT NULL, reason VARCHAR, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    spec_hash VARCHAR NOT NULL, run_id VARCHAR, scope VARCHAR NOT NULL, name VARCHAR NOT NULL,
    value DOUBLE, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    text_hash VARCHAR NOT NULL, model VARCHAR NOT NULL, vector FLOAT[] NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    eval_id VARCHAR NOT NULL, spec_hash VARCHAR NOT NULL, method VARCHAR, trainer VARCHAR NOT NULL,
    train_source VARCHAR NOT NULL, test_set VARCHAR NOT NULL, n_train INTEGER NOT NULL,
    budget_fraction DOUBLE NOT NULL, requests INTEGER, tokens BIGINT, cost_usd DOUBLE,
    accuracy DOUBLE, macro_f1 DOUBLE, micro_f1 DOUBLE, per_class JSON, confusion JSON, details JSON,
    created_at TIMESTAMPTZ NOT NULL, snapshot_id BIGINT, dataset_version INTEGER);
CREATE TABLE IF NOT EXISTS asset_values (
    asset VARCHAR NOT NULL, partition VARCHAR NOT NULL, value BLOB NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS review_decisions (
    spec_hash VARCHAR NOT NULL, sample_id VARCHAR NOT NULL, request_key VARCHAR NOT NULL,
    choice_index INTEGER NOT NULL, decision VARCHAR NOT NULL, label VARCHAR, note VARCHAR,
    reviewer VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS attribute_edits (
    spec_hash VARCHAR NOT NULL, dimension VARCHAR NOT NULL, class VARCHAR NOT NULL, value VARCHAR NOT NULL,
    action VARCHAR NOT NULL, new_value VARCHAR, note VARCHAR, reviewer VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS dataset_versions (
    spec_name VARCHAR NOT NULL, version INTEGER NOT NULL, spec_hash VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
    snapshot_id BIGINT NOT NULL, samples BIGINT NOT NULL, kept BIGINT, created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    spec_name VARCHAR NOT NULL, holder VARCHAR NOT NULL, host VARCHAR NOT NULL, pid INTEGER NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL, renewed_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS writer_token (n BIGINT NOT NULL);
"""

# The newest human review decision per generated text (request and choice: a top-up under a new spec hash
# that reuses the cached request keeps it). ``label`` is the reviewed class of a relabel, else NULL.
REVIEWED = ("(SELECT request_key, choice_index, decision, CASE WHEN decision = 'relabel' THEN label END AS label,"
            " note, reviewer, created_at FROM review_decisions QUALIFY row_number() OVER"
            " (PARTITION BY request_key, choice_index ORDER BY created_at DESC) = 1)")
# The same columns, empty: a store of an older schema opened read-only has no review_decisions table.
NO_REVIEWS = ("(SELECT NULL::VARCHAR AS request_key, NULL::INTEGER AS choice_index, NULL::VARCHAR AS decision,"
              " NULL::VARCHAR AS label, NULL::VARCHAR AS note, NULL::VARCHAR AS reviewer,"
              " NULL::TIMESTAMPTZ AS created_at WHERE false)")
REVIEW_DECISIONS = ("keep", "reject", "relabel")


# Each table's unique key (DuckLake has no constraints: the store keeps these unique).
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "meta": ("key",), "specs": ("spec_hash",), "runs": ("run_id",), "prompts": ("prompt_hash",),
    "llm_requests": ("request_key",), "samples": ("sample_id",), "embeddings": ("text_hash", "model"),
    "evaluations": ("eval_id",), "asset_values": ("asset", "partition"),
}


def key_match(table: str, left: str, right: str) -> str:
    """The SQL condition that rows ``left`` and ``right`` of ``table`` have the same key."""
    return " AND ".join(f"{right}.{k} = {left}.{k}" for k in UNIQUE_KEYS[table])


class _Record:
    """A row of ``TABLE``: each field is a column of that name (a trailing ``_`` dropped: ``class_``)."""

    __slots__ = ()
    TABLE: ClassVar[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptRecord(_Record):
    """A row of ``prompts``: a rendered prompt, stored once by hash."""

    TABLE: ClassVar[str] = "prompts"
    prompt_hash: str
    method: str
    messages: str  # JSON


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord(_Record):
    """A row of ``llm_requests``: one completed LLM request (the cache)."""

    TABLE: ClassVar[str] = "llm_requests"
    request_key: str
    model: str
    params: str  # JSON
    prompt_hash: str
    purpose: str
    choices: str  # JSON
    finish_reasons: str | None = None  # JSON
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float | None = None
    attempts: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleRecord(_Record):
    """A row of ``samples``: one generated text with its full provenance."""

    TABLE: ClassVar[str] = "samples"
    sample_id: str
    spec_hash: str
    run_id: str
    class_: str
    text: str
    attributes: str  # JSON
    seed: int
    sample_index: int
    choice_index: int
    method: str
    prompt_hash: str
    request_key: str
    model: str
    params: str  # JSON
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    is_refusal: bool
    generated_at: datetime


Record = PromptRecord | RequestRecord | SampleRecord
# What generation writes at the rate of completions: journaled locally, published to the lake in batches.
JOURNAL_RECORDS: dict[str, type[_Record]] = {kind.TABLE: kind for kind in (PromptRecord, RequestRecord, SampleRecord)}
_DUCKDB_TYPES = {"str": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN", "datetime": "TIMESTAMPTZ"}


def record_columns(kind: type[_Record]) -> dict[str, str]:
    """A record type's columns (its fields, then ``created_at``) and their DuckDB types."""
    columns = {f.name.rstrip("_"): _DUCKDB_TYPES[str(f.type).split(" |")[0]] for f in fields(kind)}
    return columns | {"created_at": "TIMESTAMPTZ"}
