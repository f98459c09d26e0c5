"""Clusters and databases the tests build over and over: a cluster of a test's own whose database
is built like an Audius discovery database with every worker of the extension off, and throwaway
databases of the session cluster."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import psycopg

from harness.pg import Cluster, load_audius_tables


# every worker of the extension off: the sweep, the challenge processors, the follower
WORKERS_OFF = {"audius_indexer.sweep_enabled": "off", "audius_indexer.challenges_interval": "0",
               "audius_indexer.follow_interval": "0"}


def idle_audius_cluster(name: str, db: str, settings: dict[str, str] | None = None, *,
                        owner: str | None = None, extra_sql: tuple[str, ...] = ()) -> Cluster:
    """A started cluster, audius_indexer preloaded, every worker of the extension connected to `db`
    and off (sweep_enabled off, challenges_interval and follow_interval 0; `settings` adds or
    overrides); `db` (owned by `owner`, a LOGIN role created first, when given) built like an
    Audius discovery database (load_audius_tables), then `extra_sql`, then CREATE EXTENSION. The
    workers have not seen `db` yet (restart the cluster for that). The caller destroys it."""
    c = Cluster(preload=["audius_indexer"], name=name)
    c.settings.update({"audius_indexer.database": f"'{db}'", **WORKERS_OFF, **(settings or {})})
    try:
        c.init().start()
        with c.connect() as conn:
            if owner:
                conn.execute(f"CREATE ROLE {owner} LOGIN")
            conn.execute(f'CREATE DATABASE "{db}"' + (f" OWNER {owner}" if owner else ""))
        with c.connect(db) as conn:
            load_audius_tables(conn)
            for sql in extra_sql:
                conn.execute(sql)
            conn.execute("CREATE EXTENSION audius_indexer")
    except BaseException:
        c.destroy()
        raise
    return c


@contextlib.contextmanager
def scratch_database(cluster: Cluster, name: str,
                     make: Callable[[Cluster, str], None] = Cluster.create_database) -> Iterator[None]:
    """Database `name` of `cluster`, made by `make(cluster, name)` (an empty CREATE DATABASE by
    default) after dropping what a previous run may have left, and dropped (WITH (FORCE)) at the end."""
    def drop() -> None:
        with cluster.connect() as su:
            su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    drop()
    make(cluster, name)
    try:
        yield
    finally:
        drop()


@contextlib.contextmanager
def extension_database(cluster: Cluster, name: str) -> Iterator[psycopg.Connection]:
    """A scratch_database with a fresh CREATE EXTENSION (nothing enabled); yields a connection to it
    (autocommit), closed before the database is dropped."""
    with scratch_database(cluster, name), cluster.connect(name) as conn:
        conn.execute("CREATE EXTENSION audius_indexer")
        yield conn
