"""The real PostgreSQL fixture: a server that answers psql, and one isolated database per test."""
from __future__ import annotations

import subprocess

try:
    from tests.postgres import PostgresServer
except ImportError:  # tests/ is not a package: pytest puts this directory on sys.path
    from postgres import PostgresServer  # type: ignore[no-redef]


def psql(server: PostgresServer, conninfo: str, sql: str) -> list[str]:
    """Rows of ``sql`` as psql prints them unaligned (fields separated by '|')."""
    return subprocess.run([server.tools["psql"], conninfo, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()


def test_query_and_write(postgres: PostgresServer, postgres_db: str) -> None:
    assert "host=127.0.0.1" in postgres_db and f"port={postgres.port}" in postgres_db
    assert psql(postgres, postgres_db, "SELECT 1") == ["1"]
    psql(postgres, postgres_db, "CREATE TABLE t (id int PRIMARY KEY, name text)")
    psql(postgres, postgres_db, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    assert psql(postgres, postgres_db, "SELECT id, name FROM t ORDER BY id") == ["1|a", "2|b"]
    assert psql(postgres, postgres_db, "SHOW max_connections") == ["200"]


def test_databases_are_isolated(postgres: PostgresServer, postgres_db: str) -> None:
    other = postgres.create_database()
    assert other != postgres_db
    psql(postgres, postgres_db, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
    assert psql(postgres, other, "SELECT to_regclass('t') IS NULL") == ["t"]
    psql(postgres, other, "CREATE TABLE t (x int); INSERT INTO t VALUES (8)")
    assert psql(postgres, postgres_db, "SELECT x FROM t") == ["7"]
    assert psql(postgres, other, "SELECT x FROM t") == ["8"]
