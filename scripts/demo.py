"""`make demo`: a throwaway PostgreSQL 15 cluster (as the postgres OS user) with audius_indexer and
pg_cron preloaded, a local anvil chain with Multicall3 at its canonical address and our test
AUDIO/Staking/DelegateManager contracts holding balances for 1,000 wallets, then a live session:
balances through multicall_total_audio_balances, the background worker sweeping 1,000 stale
rows, and the event path: a transfer made during the demo lands in eth_wallet_balances within one
follow interval. Everything is torn down at the end (DEMO_KEEP=1 keeps it running until Ctrl-C).
"""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from harness.chain import Anvil, Contracts, wallet_address
from harness.pg import Cluster

N_WALLETS = 1000


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise TimeoutError(f"demo: timed out waiting for {what}")
        time.sleep(0.1)


def main() -> int:
    anvil = Anvil()
    cluster = None
    try:
        banner("local chain: anvil + canonical Multicall3 + test contracts")
        anvil.start()
        anvil.install_multicall3()
        contracts = Contracts.deploy_all(anvil)
        rng = random.Random(2026)
        wallets = [wallet_address(i, "demo").lower() for i in range(N_WALLETS)]
        token = [rng.randrange(0, 5_000) * 10**18 + rng.randrange(10**18) for _ in wallets]
        staked = [rng.choice([0, 0, 0, rng.randrange(1, 200_000) * 10**18]) for _ in wallets]
        delegated = [rng.choice([0, 0, rng.randrange(1, 50_000) * 10**18]) for _ in wallets]
        contracts.set_values(wallets, token=token, staked=staked, delegated=delegated)
        contracts.set_revert(wallets[7:8], "staking", True)        # one wallet whose read reverts
        print(f"anvil at {anvil.url}, block {anvil.block_number()}; {N_WALLETS} wallets funded")
        print(f"AUDIO {contracts.token}\nStaking {contracts.staking}\nDelegateManager {contracts.delegate}")

        banner("PostgreSQL 15 cluster (runs as the postgres OS user) with the extension")
        cluster = Cluster(preload=["audius_indexer", "pg_cron"], name="demo")
        cluster.settings.update({
            "cron.database_name": "'audius'",
            "cron.host": f"'{cluster.sockdir}'",
            "audius_indexer.database": "'audius'",
            "audius_indexer.sweep_interval": "'1s'",
            "audius_indexer.sweep_batch_size": "200",
            "audius_indexer.sweep_enabled": "off",
            "audius_indexer.follow_interval": "'2s'",
        })
        cluster.init().start()
        cluster.create_database("audius")
        cluster.restart()       # the worker connects to `audius`, which exists from now on
        cluster.set_system(rpc_url=anvil.url, token_address=contracts.token, staking_address=contracts.staking,
                           delegate_manager_address=contracts.delegate)
        print(cluster.psql("-c", "CREATE EXTENSION audius_indexer", dbname="audius"), end="")
        # nothing acts until the DBA says so: the demo turns on the two paths it shows
        print(cluster.psql("-c", "SELECT audius_indexer.enable('sweep'), audius_indexer.enable('follow')",
                           dbname="audius"), end="")
        print(f"psql: psql -h {cluster.sockdir} -p {cluster.port} -U postgres audius")

        banner("balances of a handful of wallets, one aggregate3 eth_call")
        handful = ",".join(f"'{w}'" for w in wallets[:8])
        print(cluster.psql("-c", "SELECT wallet, balance, token_balance, staked, delegated, block_number, error "
                           f"FROM audius_indexer.multicall_total_audio_balances(ARRAY[{handful}])",
                           dbname="audius"), end="")

        banner(f"live sweep: {N_WALLETS} stale rows (updated_at 1970-01-01, balance 0) and the worker on")
        with cluster.connect("audius") as conn:
            conn.execute("INSERT INTO eth_wallet_balances (wallet, balance, updated_at) "
                         "SELECT w, 0, '1970-01-01' FROM unnest(%s::text[]) AS w", (wallets,))
        cluster.set_system(sweep_enabled=True)
        start = time.time()
        with cluster.connect("audius") as conn:
            while time.time() - start < 30:
                stale = conn.execute("SELECT count(*) FROM eth_wallet_balances "
                                     "WHERE updated_at = '1970-01-01'").fetchone()[0]
                print(f"  t={time.time() - start:4.1f}s  stale rows: {stale}", flush=True)
                if stale <= conn.execute("SELECT count(*) FROM audius_indexer.wallet_failures").fetchone()[0]:
                    break
                time.sleep(1)
        print(cluster.psql("-x", "-c", "SELECT * FROM audius_indexer.sweep_status", dbname="audius"), end="")
        print(cluster.psql("-c", "SELECT wallet, reason, attempts, next_attempt FROM audius_indexer.wallet_failures",
                           dbname="audius"), end="")
        print(cluster.psql("-c", "SELECT wallet, balance, blocknumber, updated_at FROM eth_wallet_balances "
                           "ORDER BY balance DESC LIMIT 5", dbname="audius"), end="")
        print("worker log:")
        for line in cluster.log_text().splitlines():
            if "audius_indexer sweep:" in line:
                print("  " + line.split(": ", 1)[-1])

        banner("event path: a transfer during the demo, followed by the follow worker (interval 2 s)")
        cluster.set_system(sweep_enabled=False)  # so only the follower can refresh these rows now
        with cluster.connect("audius") as conn:
            wait_for(lambda: conn.execute("SELECT checkpoint FROM audius_indexer.follow_status").fetchone()[0]
                     is not None, 20, "the follower's first step (it starts at the head)")
            src, dst = wallets[1], wallets[2]
            before = conn.execute("SELECT wallet, balance, blocknumber FROM eth_wallet_balances "
                                  "WHERE wallet IN (%s, %s) ORDER BY wallet", (src, dst)).fetchall()
            amount = token[1] // 2
            rcpt = contracts.transfer(src, dst, amount)
            block = int(rcpt["blockNumber"], 16)
            t0 = time.time()
            print(f"Transfer of {amount} wei from {src} to {dst} in block {block}")
            wait_for(lambda: conn.execute("SELECT count(*) FROM eth_wallet_balances WHERE wallet IN (%s, %s) "
                                          "AND blocknumber >= %s", (src, dst, block)).fetchone()[0] == 2,
                     20, "both wallets refreshed at or after the transfer's block")
            print(f"  in eth_wallet_balances {time.time() - t0:.1f} s later")
            after = conn.execute("SELECT wallet, balance, blocknumber FROM eth_wallet_balances "
                                 "WHERE wallet IN (%s, %s) ORDER BY wallet", (src, dst)).fetchall()
            for b, a in zip(before, after):
                print(f"  {a[0]}  {b[1]} @ {b[2]}  ->  {a[1]} @ {a[2]}")
        print(cluster.psql("-x", "-c", "SELECT checkpoint, head, lag_blocks, last_logs, last_tracked, last_updated, "
                           "pending_wallets, steps, last_error FROM audius_indexer.follow_status", dbname="audius"), end="")

        banner("point it at a real node")
        print("""As a superuser (the URL is superuser-only and hidden from other roles: it carries your API key):

  ALTER SYSTEM SET audius_indexer.rpc_url = 'https://eth-mainnet.g.alchemy.com/v2/<key>';
  -- or an ordered failover list:
  ALTER SYSTEM SET audius_indexer.rpc_urls = 'https://primary/<key>, https://fallback/<key>';
  SELECT pg_reload_conf();

The contract settings default to mainnet (AUDIO, Staking, DelegateManager, Multicall3), so on mainnet
nothing else is needed. For the workers add audius_indexer to the shared_preload_libraries you
already have (the line replaces the list), name the database, and restart:

  shared_preload_libraries = '<your list>,audius_indexer'
  audius_indexer.database  = 'audius_discovery'

Nothing acts until you turn a path on, in that database (as this demo did for sweep and follow):

  SELECT audius_indexer.enable('sweep');   -- 'follow', 'challenges': one at a time, as the Go services stop

or drive the sweep from pg_cron, in the Audius database:
  SELECT cron.schedule_in_database('audius-sweep', '* * * * *', 'CALL audius_indexer.sweep()', 'audius_discovery');
The cutover runbook, step by step, is in docs/operations.md.""")
        if os.environ.get("DEMO_KEEP"):
            print(f"\nDEMO_KEEP set: cluster on {cluster.sockdir}:{cluster.port}, anvil {anvil.url}. Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        if cluster:
            cluster.destroy()
        anvil.destroy()


if __name__ == "__main__":
    sys.exit(main())
