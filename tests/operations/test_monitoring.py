"""Monitoring (cutover day): Debian's real prometheus-postgres-exporter scrapes audius_indexer.

A cluster of its own (audius_indexer preloaded, every worker off) with the Audius fixture schema,
the extension, and `mon_scraper`, a LOGIN role that is only a member of audius_indexer_monitor.
The exporter (/usr/bin/prometheus-postgres-exporter, 0.11 in Debian 12) runs as a subprocess on a
free port with DATA_SOURCE_NAME on the cluster's socket as mon_scraper and
--extend.query-path=sql/prometheus-queries.yaml. With known state set by a superuser (checkpoint,
head, reorgs, stale and backed-off wallets, challenge checkpoints, RPC traffic with one injected
503 through the session's recording proxy), a scrape of /metrics must show every series with those
values, no query of the file may fail, and neither the scrapes nor the monitor role's own queries
may reach the node (the proxy counts 0 requests). The monitor role can write nothing and call no
function that reaches the network (42501).
"""
from __future__ import annotations

import math
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest

from harness.chain import wallet_address
from harness.databases import idle_audius_cluster
from harness.pg import Cluster, free_port
from harness.procs import stop_process, wait_serving
from harness.triggers import require_extension_installed

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
EXPORTER = Path("/usr/bin/prometheus-postgres-exporter")
QUERIES = REPO / "sql" / "prometheus-queries.yaml"
ROLE = "mon_scraper"
CHECKPOINT, HEAD, REORGS = 12_345, 12_400, 2
EVENTS_HEAD = 500
CHALLENGE_CHECKPOINTS = {"m": 400, "r": 450, "rv": 500, "rd": 0}

SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format → {(name, frozenset of (label, value)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable exposition line: {line!r}"
        labels = frozenset((k, v.encode().decode("unicode_escape")) for k, v in LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def series(metrics, name: str, **labels) -> list[float]:
    want = set(labels.items())
    return [v for (n, ls), v in metrics.items() if n == name and want <= set(ls)]


def one(metrics, name: str, **labels) -> float:
    got = series(metrics, name, **labels)
    assert len(got) == 1, f"{name}{labels}: {len(got)} series: {got}"
    return got[0]


def query_names() -> list[str]:
    return re.findall(r"^(audius_indexer_[a-z_]+):\s*$", QUERIES.read_text(), re.M)


class Exporter:
    def __init__(self, cluster: Cluster, user: str, dbname: str):
        self.port = free_port()
        self.log = cluster.root / "exporter.log"
        env = {"PATH": "/usr/bin:/bin",
               "DATA_SOURCE_NAME": f"host={cluster.sockdir} port={cluster.port} user={user} "
                                   f"dbname={dbname} sslmode=disable"}
        self.proc = subprocess.Popen(
            [str(EXPORTER), f"--web.listen-address=127.0.0.1:{self.port}",
             f"--extend.query-path={QUERIES}", "--disable-default-metrics", "--disable-settings-metrics",
             "--log.level=info"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
            assert r.status == 200
            return r.read().decode()

    def wait_ready(self, timeout: float = 20) -> None:
        wait_serving(self.proc, self.scrape, timeout=timeout, errors=(urllib.error.URLError, ConnectionError),
                     interval=0.1,
                     exited=lambda rc: AssertionError(f"exporter exited {rc}: {self.log.read_text()[-2000:]}"))

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def mon(proxy, contracts):
    require_extension_installed()
    if not EXPORTER.exists():
        pytest.fail(f"{EXPORTER} missing (apt package prometheus-postgres-exporter; scripts/install-deps.sh)",
                    pytrace=False)
    c = idle_audius_cluster("monitoring", "audius")
    try:
        with c.connect("audius") as su:
            su.execute(f"CREATE ROLE {ROLE} LOGIN IN ROLE audius_indexer_monitor")
            seed_state(su)
        c.set_system(rpc_url=proxy.url, token_address=contracts.token, staking_address=contracts.staking,
                     delegate_manager_address=contracts.delegate)
        yield c
        c.assert_log_clean()
    finally:
        proxy.clear_faults()
        c.destroy()


def seed_state(su) -> None:
    """What the scrape must show, set as a superuser."""
    # 100 wallets last read 2 h ago (+ i s), one failing wallet still at 1970 (backed off), three
    # more backed off, one whose back-off is over
    su.execute("INSERT INTO eth_wallet_balances (wallet, balance, blocknumber, updated_at) "
               "SELECT '0x' || lpad(to_hex(g), 40, '0'), g, g, "
               "       localtimestamp - interval '2 hours' - g * interval '1 second' FROM generate_series(1, 100) g")
    su.execute("INSERT INTO eth_wallet_balances (wallet, balance, updated_at) "
               "VALUES ('0x00000000000000000000000000000000000000ff', 0, '1970-01-01')")
    su.execute("INSERT INTO audius_indexer.wallet_failures (wallet, reason, next_attempt) VALUES "
               "('0x00000000000000000000000000000000000000ff', 'revert', now() + interval '1 hour'), "
               "('0x0000000000000000000000000000000000000001', 'revert', now() + interval '1 hour'), "
               "('0x0000000000000000000000000000000000000002', 'revert', now() + interval '1 hour'), "
               "('0x0000000000000000000000000000000000000003', 'revert', now() - interval '1 minute')")
    # the follower: checkpoint, the head it saw, the checkpoint block's time, two reorgs
    su.execute("INSERT INTO eth_indexer_checkpoints (name, last_block) VALUES ('audio_transfers', %s)", (CHECKPOINT,))
    su.execute("INSERT INTO audius_indexer.follow_blocks (block, hash, block_time) "
               "VALUES (%s, '0x' || repeat('ab', 32), now() - interval '30 seconds')", (CHECKPOINT,))
    su.execute("UPDATE audius_indexer.follow_state SET head = %s, head_seen_at = now(), steps = 7, "
               "last_step_started = now() - interval '11 seconds', last_step_finished = now() - interval '10 seconds', "
               "reorgs = %s", (HEAD, REORGS))
    # the challenge processors: user_events up to block 500, their checkpoints
    su.execute("INSERT INTO user_events (blocknumber, is_current, user_id) "
               "SELECT g, true, g FROM generate_series(1, %s) g", (EVENTS_HEAD,))
    for cid, cp in CHALLENGE_CHECKPOINTS.items():
        su.execute("INSERT INTO indexing_checkpoints (tablename, last_checkpoint) VALUES (%s, %s)",
                   (f"challenges:{cid}:last_blocknumber", cp))
    su.execute("ANALYZE eth_wallet_balances")


def proxy_host(proxy) -> str:
    u = urllib.parse.urlsplit(proxy.url)
    return f"{u.hostname}:{u.port}"


@pytest.fixture(scope="module")
def scraped(mon, proxy, contracts):
    """RPC traffic by a superuser (one injected 503, then the retry passes), then the exporter's
    scrapes with the proxy counting: (metrics, proxy requests during the scrapes, exporter)."""
    proxy.clear_faults()
    proxy.fault("http503", times=1)
    with mon.connect("audius") as su:
        rows = su.execute("SELECT wallet, balance, error FROM audius_indexer.multicall_total_audio_balances(%s)",
                          ([wallet_address(1, "monitoring").lower()],)).fetchall()
        assert len(rows) == 1 and rows[0][2] is None, rows
    proxy.clear_faults()
    proxy.reset()
    exp = Exporter(mon, ROLE, "audius")
    try:
        exp.wait_ready()
        exp.scrape()
        text = exp.scrape()
        requests = len(proxy.requests) + proxy.accepted
        yield parse_metrics(text), requests, exp
    finally:
        exp.stop()


def test_exporter_version_and_flags():
    """The installed exporter has the flags the docs and this test use (Debian 12: 0.11.x)."""
    v = subprocess.run([str(EXPORTER), "--version"], capture_output=True, text=True)
    assert re.search(r"version 0\.\d+\.\d+", v.stdout + v.stderr), v.stdout + v.stderr
    h = subprocess.run([str(EXPORTER), "--help"], capture_output=True, text=True)
    for flag in ("--web.listen-address", "--extend.query-path", "--disable-default-metrics",
                 "--disable-settings-metrics", "--auto-discover-databases"):
        assert flag in h.stdout + h.stderr, flag


def test_every_query_of_the_file_runs_as_the_monitor(scraped):
    m, _, exp = scraped
    assert one(m, "pg_up") == 1
    assert one(m, "pg_exporter_last_scrape_error") == 0, exp.log.read_text()[-3000:]
    load = series(m, "pg_exporter_user_queries_load_error")
    assert load and all(v == 0 for v in load), load
    for q in query_names():
        assert any(n.startswith(q + "_") for n, _ in m), f"no series of query {q}: {exp.log.read_text()[-3000:]}"
    assert "permission denied" not in exp.log.read_text()


def test_follow_series(scraped):
    m, _, _ = scraped
    assert one(m, "audius_indexer_follow_checkpoint_block") == CHECKPOINT
    assert one(m, "audius_indexer_follow_head_block") == HEAD
    assert one(m, "audius_indexer_follow_lag_blocks") == HEAD - CHECKPOINT
    assert 29 <= one(m, "audius_indexer_follow_lag_seconds") < 300
    assert 9 <= one(m, "audius_indexer_follow_last_step_age_seconds") < 300
    assert one(m, "audius_indexer_follow_reorgs_total") == REORGS
    assert one(m, "audius_indexer_follow_steps_total") == 7
    assert one(m, "audius_indexer_follow_pending_wallets") == 0
    assert one(m, "audius_indexer_follow_failing") == 0


def test_sweep_series(scraped):
    m, _, _ = scraped
    # the stalest row is the failing wallet stamped 1970; leaving it out, 2 h + 100 s
    assert one(m, "audius_indexer_sweep_cycle_age_seconds") > 50 * 365 * 86400
    assert 7300 <= one(m, "audius_indexer_sweep_cycle_age_excluding_failing_seconds") < 7300 + 300
    assert one(m, "audius_indexer_sweep_wallets_in_backoff") == 3
    assert one(m, "audius_indexer_sweep_wallets_failing") == 4
    assert one(m, "audius_indexer_sweep_wallets") == 101   # the estimate, right after ANALYZE
    assert one(m, "audius_indexer_sweep_worker_running") == 0
    assert math.isnan(one(m, "audius_indexer_sweep_last_tick_age_seconds"))   # never ticked
    assert one(m, "audius_indexer_sweep_ticks_total") == 0


def test_rpc_series_by_endpoint_and_kind(scraped, proxy):
    m, _, _ = scraped
    host = proxy_host(proxy)
    req = one(m, "audius_indexer_rpc_requests_total", host=host)
    fail = one(m, "audius_indexer_rpc_failures_total", host=host)
    assert req >= 2 and fail == 1, (req, fail)
    kinds = {dict(ls)["kind"]: v for (n, ls), v in m.items()
             if n == "audius_indexer_rpc_errors_total" and dict(ls).get("host") == host}
    assert kinds["http_status"] == 1, kinds
    assert {"connect", "timeout", "rate_limited", "jsonrpc", "bad_response", "range_refused"} <= set(kinds), kinds
    assert sum(kinds.values()) == fail, kinds
    assert one(m, "audius_indexer_rpc_avg_latency_seconds", host=host) > 0


def test_challenge_processor_series(scraped):
    m, _, _ = scraped
    for cid, cp in CHALLENGE_CHECKPOINTS.items():
        assert one(m, "audius_indexer_challenge_checkpoint_block", challenge_id=cid) == cp
        assert one(m, "audius_indexer_challenge_head_block", challenge_id=cid) == EVENTS_HEAD
        assert one(m, "audius_indexer_challenge_lag_blocks", challenge_id=cid) == EVENTS_HEAD - cp
        assert one(m, "audius_indexer_challenge_failing", challenge_id=cid) == 0


def test_health_and_path_series(scraped):
    m, _, _ = scraped
    health = {dict(ls)["check_name"]: v for (n, ls), v in m.items() if n == "audius_indexer_health_ok"}
    assert health["table eth_wallet_balances"] == 1
    assert health["follow transfers"] == 1 and health["sweep status"] == 1, health
    assert "sweep worker" in health and "challenge processor m" in health, sorted(health)
    assert not [k for k in health if k.startswith(("rpc ", "contract "))], sorted(health)
    paths = {dict(ls)["path"] for (n, ls), v in m.items() if n == "audius_indexer_path_stopped"}
    assert paths == {"sweep", "follow", "challenges", "enroll"}, paths


def test_scrapes_reach_no_rpc(scraped):
    _, requests, _ = scraped
    assert requests == 0, f"{requests} requests/connections reached the RPC proxy during the scrapes"


def test_monitor_role_reads_without_rpc_and_cannot_write_or_call_the_node(mon, scraped, proxy):
    proxy.reset()
    with mon.connect("audius", user=ROLE) as c:
        for view in ("sweep_status", "follow_status", "challenge_processor_status", "path_status"):
            assert c.execute(f"SELECT * FROM audius_indexer.{view}").fetchall()
        h = {r[0]: (r[1], r[2]) for r in c.execute("SELECT * FROM audius_indexer.health()")}
        assert h["table eth_wallet_balances"] == (True, "rows: 101 (estimate: pg_class.reltuples)"), h
        assert c.execute("SELECT count(*) FROM audius_indexer.rpc_endpoint_stats_server()").fetchone()[0] >= 1
        assert c.execute("SELECT count(*) FROM audius_indexer.rpc_endpoint_errors_server()").fetchone()[0] >= 11
        denied = {
            "upsert_wallet_balances": "SELECT * FROM audius_indexer.upsert_wallet_balances("
                                      "ARRAY['0x0000000000000000000000000000000000000001'], ARRAY[1], ARRAY[1])",
            "multicall_total_audio_balances": "SELECT * FROM audius_indexer.multicall_total_audio_balances("
                                              "ARRAY['0x0000000000000000000000000000000000000001'])",
            "refresh_wallets": "SELECT * FROM audius_indexer.refresh_wallets(ARRAY['0x0000000000000000000000000000000000000001'])",
            "refresh_stale": "SELECT * FROM audius_indexer.refresh_stale(1)",
            "sweep": "CALL audius_indexer.sweep(1)",
            "follow_transfers": "SELECT * FROM audius_indexer.follow_transfers()",
            "process_user_event_challenges": "SELECT * FROM audius_indexer.process_user_event_challenges()",
            "seed_challenge_checkpoints": "SELECT * FROM audius_indexer.seed_challenge_checkpoints()",
            "doctor": "SELECT * FROM audius_indexer.doctor()",
            "reset_sweep_status": "SELECT audius_indexer.reset_sweep_status()",
            "enable": "SELECT audius_indexer.enable('sweep')",
            "insert eth_wallet_balances": "INSERT INTO public.eth_wallet_balances (wallet) VALUES ('x')",
            "update sweep_state": "UPDATE audius_indexer.sweep_state SET ticks = 0",
            "select wallet_failures": "SELECT * FROM audius_indexer.wallet_failures",
        }
        for what, sql in denied.items():
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql)
            assert e.value.sqlstate == "42501", (what, e.value.sqlstate, str(e.value))
        # nothing of the schema is writable, no Audius table either
        writable = c.execute(
            "SELECT c.oid::regclass::text FROM pg_class c "
            "WHERE (c.relnamespace = 'audius_indexer'::regnamespace OR c.oid IN "
            "       ('public.eth_wallet_balances'::regclass, 'public.eth_indexer_checkpoints'::regclass, "
            "        'public.user_challenges'::regclass, 'public.indexing_checkpoints'::regclass)) "
            "  AND c.relkind IN ('r', 'v', 'p') "
            "  AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE') "
            "       OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE'))").fetchall()
        assert writable == [], writable
    assert len(proxy.requests) == 0 and proxy.accepted == 0, "the monitor role's queries reached the node"
    # the proxy does see what a superuser sends: the check above is not vacuous
    with mon.connect("audius") as su:
        su.execute("SELECT * FROM audius_indexer.doctor()").fetchall()
    assert len(proxy.requests) > 0


def test_health_is_doctor_without_rpc(mon, scraped, proxy):
    """health() = doctor()'s database rows (same names, same verdicts) minus what needs the node."""
    with mon.connect("audius") as su:
        doc = {r[0]: r[1] for r in su.execute("SELECT check_name, ok FROM audius_indexer.doctor()")}
        proxy.reset()
        health = {r[0]: r[1] for r in su.execute("SELECT check_name, ok FROM audius_indexer.health()")}
    assert len(proxy.requests) == 0
    node_rows = {k for k in doc if k == "settings" or k.startswith(("rpc ", "contract "))
                 or k == "rows stamped above the chain head"}
    assert node_rows and set(health) == set(doc) - node_rows, (sorted(doc), sorted(health))
    assert {k: v for k, v in doc.items() if k in health} == health
