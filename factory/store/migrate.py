"""``factory migrate``: copy a single-file store (``factory.duckdb``, schema v1-v3) into the shared store, in
one transaction, verified by row counts (columns the old file lacks stay empty)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from factory.store.lake import StoreLocation
from factory.store.schema import UNIQUE_KEYS, key_match
from factory.store.store import Store


class MigrationError(RuntimeError):
    """The old store cannot be copied as it is."""


def migrate(old: Path, location: StoreLocation) -> dict[str, int]:
    """Copy every table of ``old`` into the store at ``location``; return the rows copied per table."""
    if not old.is_file():
        raise MigrationError(f"{old}: no such file")
    with Store(location) as store:
        con = store.con
        try:
            con.execute(f"ATTACH '{str(old.resolve())}' AS old_store (READ_ONLY)")
        except duckdb.Error as exc:
            raise MigrationError(f"{old}: not a DuckDB store ({str(exc).splitlines()[0]})") from exc
        try:
            return _copy(store, con)
        finally:
            con.execute("DETACH old_store")


def _columns(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> list[str]:
    return [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_catalog = ?"
                                      " AND table_name = ? ORDER BY ordinal_position", [catalog, table]).fetchall()]


def _copy(store: Store, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    old_tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables"
                                            " WHERE table_catalog = 'old_store'").fetchall()}
    if "samples" not in old_tables:
        raise MigrationError("not an attrfactory store: it has no samples table")
    tables = [t for t in store.table_counts() if t in old_tables and t != "meta"]
    expected = {t: con.execute(f'SELECT count(*) FROM old_store."{t}"').fetchone()[0] for t in tables}
    before = store.table_counts()

    def copy(c: duckdb.DuckDBPyConnection) -> None:
        for table in tables:
            cols = [col for col in _columns(c, "old_store", table) if col in _columns(c, "lake", table)]
            names = ", ".join(f'"{col}"' for col in cols)
            where = ""
            if table in UNIQUE_KEYS:  # a second migrate of the same file adds nothing
                where = f" WHERE NOT EXISTS (SELECT 1 FROM lake.{table} n WHERE {key_match(table, 'o', 'n')})"
            c.execute(f"INSERT INTO lake.{table} ({names}) SELECT {names} FROM old_store.{table} o{where}")

    store._write(copy)
    after = store.table_counts()
    for table in tables:
        if table in UNIQUE_KEYS:
            ok = after[table] - before[table] <= expected[table] and after[table] >= expected[table]
        else:
            ok = after[table] - before[table] == expected[table]
        if not ok:
            raise MigrationError(f"{table}: {expected[table]} rows in the old store, {after[table]} now")
    return expected
