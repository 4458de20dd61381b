"""The store: a DuckLake catalog (SQLite file by default, PostgreSQL on a cluster) plus Parquet data files,
shared by every run, reader and pod; dataset versions are its snapshots.

- ``lake``: where the store lives (``$FACTORY_STORE``), attaching it, retrying commit conflicts;
- ``schema``: the tables, their keys, the typed records generation writes;
- ``journal``: each process's local JSON-lines journal of completions, published to the lake in batches;
- ``store``: :class:`Store`, every SQL statement of the factory;
- ``leases``: one run per spec at a time;
- ``housekeeping``: merging files and expiring snapshots; ``migrate``: copying a single-file store over.
"""

from factory.store.lake import DEFAULT_STORE, StoreError, StoreLocation
from factory.store.leases import Lease, LeaseHeld
from factory.store.schema import SCHEMA_VERSION, PromptRecord, Record, RequestRecord, SampleRecord
from factory.store.store import REVIEW_DECISIONS, CachedRequest, Store, now

__all__ = ["DEFAULT_STORE", "REVIEW_DECISIONS", "SCHEMA_VERSION", "CachedRequest", "Lease", "LeaseHeld",
           "PromptRecord", "Record", "RequestRecord", "SampleRecord", "Store", "StoreError", "StoreLocation", "now"]
