-- audius_indexer: which paths act in this database (src/paths.rs). Nothing acts until the DBA says
-- so: after CREATE EXTENSION every path is 'off'; audius_indexer.enable('sweep' | 'follow' |
-- 'challenges' | 'enroll') turns one on ('enroll' is the enrollment triggers of sql/enrollment.sql,
-- which need install_enrollment() first). The state lives in the database: it survives restarts, follows a
-- failover to a standby and is dumped with the database (pg_extension_config_dump).
--
-- state:
--   off      the worker does nothing; SQL and pg_cron calls run (an explicit act of the DBA);
--   on       the worker runs the path on its interval; second-writer detection is armed;
--   stopped  a second writer was detected (the rows the path owns moved without it): nothing of
--            the path runs, SQL and pg_cron calls included (55000), until the DBA calls enable()
--            (take over again) or disable() (hand over).
CREATE TABLE audius_indexer.paths (
  path           text PRIMARY KEY CHECK (path IN ('sweep', 'follow', 'challenges', 'enroll')),
  state          text NOT NULL DEFAULT 'off' CHECK (state IN ('off', 'on', 'stopped')),
  changed_at     timestamptz,
  changed_by     text,
  stopped_reason text,
  stopped_at     timestamptz
);
INSERT INTO audius_indexer.paths (path) VALUES ('sweep'), ('follow'), ('challenges'), ('enroll');
SELECT pg_catalog.pg_extension_config_dump('audius_indexer.paths', '');
COMMENT ON TABLE audius_indexer.paths IS
  'Per-database state of the four paths (off, on, stopped by a detected second writer): set with audius_indexer.enable(path) / disable(path).';

-- A path stopped by a detected second writer (called by the path itself, as the extension owner).
CREATE FUNCTION audius_indexer._stop_path(p_path text, p_reason text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  UPDATE audius_indexer.paths
     SET state = 'stopped', stopped_reason = p_reason, stopped_at = pg_catalog.clock_timestamp()
   WHERE path = p_path AND state = 'on';
$$;

CREATE VIEW audius_indexer.path_status AS
SELECT p.path, p.state, p.changed_at, p.changed_by, p.stopped_reason, p.stopped_at,
       (SELECT a.pid FROM pg_catalog.pg_stat_activity a
         WHERE a.backend_type = 'audius_indexer ' || p.path AND a.datname = pg_catalog.current_database()
         LIMIT 1) AS worker_pid
  FROM audius_indexer.paths p
 ORDER BY pg_catalog.array_position(ARRAY['sweep', 'follow', 'challenges', 'enroll'], p.path);
COMMENT ON VIEW audius_indexer.path_status IS
  'The four paths of this database: state (off / on / stopped), who changed it and when, why a path stopped (a second writer), the worker pid (none for enroll: it is the enrollment triggers).';
