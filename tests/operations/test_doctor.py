"""audius_indexer.doctor(): health checks a DBA runs from psql."""
from conftest import SECRETS
from harness.chain import MULTICALL3_ADDRESS, MULTICALL3_CODEHASH


def checks(db) -> dict[str, tuple[bool, str]]:
    return {r[0]: (r[1], r[2]) for r in db.execute("SELECT * FROM audius_indexer.doctor()").fetchall()}


def test_doctor_all_green(db, contracts):
    c = checks(db)
    assert c["settings"][0], c["settings"]
    rpc = [v for k, v in c.items() if k.startswith("rpc ")]
    assert len(rpc) == 1 and rpc[0][0] and "chain id 31337" in rpc[0][1], rpc
    # the address as configured (lowercase) and the keccak256 of the runtime anvil holds there
    assert c["contract multicall3"] == (
        True, f"canonical Multicall3 at {MULTICALL3_ADDRESS.lower()} (code hash {MULTICALL3_CODEHASH})")
    for name in ("token", "staking", "delegate_manager"):
        assert c[f"contract {name}"][0], c[f"contract {name}"]
    assert c["table eth_wallet_balances"][0]
    assert c["index eth_wallet_balances_updated_at_idx"] == (True, "valid")
    assert c["sweep worker"][0]          # sweep_enabled = off in this cluster: nothing to run
    assert not any(s in d for _, d in c.values() for s in SECRETS), "no URL path/query in details"


def test_doctor_reports_problems_without_raising(db, cluster, contracts):
    # something that is not Multicall3 at the Multicall3 address
    db.execute(f"SET audius_indexer.multicall_address = '{contracts.token}'")
    c = checks(db)
    assert not c["contract multicall3"][0] and "not the canonical Multicall3" in c["contract multicall3"][1]
    db.execute("RESET audius_indexer.multicall_address")
    # an unreachable endpoint
    cluster.set_system(rpc_url="http://127.0.0.1:1/secret-key-123?apikey=zzz")
    with cluster.connect("audius") as conn:
        c = checks(conn)
    assert c["rpc 127.0.0.1:1"][0] is False and "cannot connect" in c["rpc 127.0.0.1:1"][1]
    assert not any(s in d for _, d in c.values() for s in SECRETS)
    # no URL at all
    cluster.set_system(rpc_url=None)
    with cluster.connect("audius") as conn:
        c = checks(conn)
    assert c["settings"][0] is False and "audius_indexer.rpc_url is not set" in c["settings"][1]


def test_endpoint_counters_session_and_server(db, other_conn, proxy, contracts):
    host = proxy.url.split("://", 1)[1]
    before = dict((r[0], r[1]) for r in other_conn.execute(
        "SELECT host, requests FROM audius_indexer.rpc_endpoint_stats_server()").fetchall())
    for _ in range(3):
        db.execute("SELECT * FROM audius_indexer.multicall_total_audio_balances(%s)", ([contracts.token],))
    mine = db.execute("SELECT host, requests, failures FROM audius_indexer.rpc_endpoint_stats()").fetchall()
    assert (host, 3, 0) in mine, mine
    # another session sees this session's requests in the server-wide counters (shared memory)
    after = dict((r[0], r[1]) for r in other_conn.execute(
        "SELECT host, requests FROM audius_indexer.rpc_endpoint_stats_server()").fetchall())
    assert after[host] - before.get(host, 0) == 3
    # nothing of the URL's path or query
    assert "secret" not in str(after)


def test_address_settings_are_validated_when_set(db, cluster, contracts):
    import psycopg
    import pytest
    for bad in ("junk", "0x1234", "0x" + "g" * 40, " " + contracts.token):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            db.execute("SELECT set_config('audius_indexer.token_address', %s, false)", (bad,))
        assert "expected 0x followed by 40 hex digits" in (e.value.diag.message_detail or ""), e.value
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            db.execute(f"ALTER SYSTEM SET audius_indexer.multicall_address = '{bad}'")
    # any case is accepted (the AUDIO mainnet default has an invalid EIP-55 checksum)
    db.execute("SET audius_indexer.token_address = '0X" + contracts.token[2:].upper() + "'")
    db.execute("SET audius_indexer.staking_address = '0x18aAA7115705e8be94bfFEbDE57Af9BFc265B998'")
    assert db.execute("SHOW audius_indexer.delegate_manager_address").fetchone()[0] == contracts.delegate


def test_doctor_reports_owners_triggers_and_create_rights(db):
    """The privilege risks doctor() can see: who owns each Audius table the extension writes (its
    code runs as that role when the extension writes), the triggers on it with their functions'
    owners, and non-superuser roles that may CREATE in public or in the database."""
    db.execute("DROP ROLE IF EXISTS doc_app")
    db.execute("CREATE ROLE doc_app")
    try:
        db.execute("ALTER TABLE public.eth_wallet_balances OWNER TO doc_app")
        db.execute("CREATE FUNCTION public.doc_app_note() RETURNS trigger LANGUAGE plpgsql "
                   "AS $$ BEGIN RETURN NEW; END $$")
        db.execute("ALTER FUNCTION public.doc_app_note() OWNER TO doc_app")
        db.execute("CREATE TRIGGER doc_app_note AFTER INSERT ON public.eth_wallet_balances "
                   "FOR EACH ROW EXECUTE FUNCTION public.doc_app_note()")
        db.execute("GRANT CREATE ON DATABASE audius TO doc_app")
        c = checks(db)
        ok, detail = c["owner of public.eth_wallet_balances"]
        assert "owned by doc_app" in detail and "doc_app_note" in detail and "function owner doc_app" in detail, detail
        ok, detail = c["database CREATE privilege"]
        assert not ok and "doc_app" in detail, detail
        ok, detail = c["owner of public.eth_indexer_checkpoints"]
        assert "owned by postgres (superuser)" in detail and "no triggers" in detail, detail
    finally:
        db.execute("DROP TRIGGER IF EXISTS doc_app_note ON public.eth_wallet_balances")
        db.execute("DROP FUNCTION IF EXISTS public.doc_app_note()")
        db.execute("ALTER TABLE public.eth_wallet_balances OWNER TO postgres")
        db.execute("REVOKE CREATE ON DATABASE audius FROM doc_app")
        db.execute("DROP ROLE doc_app")
