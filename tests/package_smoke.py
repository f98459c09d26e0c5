"""Smoke test of the installed Debian package (scripts/package-smoke.sh runs it after `dpkg -i`).

Uses only what the package installed: a throwaway cluster with audius_indexer preloaded, a local
anvil with Multicall3 and the test contracts, then CREATE EXTENSION, doctor(), one multicall checked
against independent eth_calls, and CREATE EXTENSION ... VERSION '0.1.0' + ALTER EXTENSION UPDATE.
Exits non-zero on any failure.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from harness.chain import Anvil, Contracts, wallet_address
from harness.pg import Cluster

PACKAGE = "audius-indexer-postgresql-15"


def owned_by_package(path: str) -> bool:
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.startswith(PACKAGE + ":")


def main() -> int:
    for f in ("/usr/lib/postgresql/15/lib/audius_indexer.so",
              "/usr/share/postgresql/15/extension/audius_indexer.control",
              f"/usr/share/doc/{PACKAGE}/indexes.sql"):
        assert owned_by_package(f), f"{f} is not installed by {PACKAGE}"
    anvil = Anvil()
    cluster = Cluster(preload=["audius_indexer"], name="pkgsmoke")
    cluster.settings.update({"audius_indexer.sweep_enabled": "off", "audius_indexer.follow_interval": "0",
                             "audius_indexer.challenges_interval": "0"})
    try:
        anvil.start()
        anvil.install_multicall3()
        contracts = Contracts.deploy_all(anvil)
        wallets = [wallet_address(i, "pkg").lower() for i in range(5)]
        contracts.set_values(wallets, [10**18 + i for i in range(5)], [i for i in range(5)], [7] * 5)
        cluster.init().start()
        cluster.create_database("audius")
        cluster.set_system(rpc_url=anvil.url, token_address=contracts.token, staking_address=contracts.staking,
                           delegate_manager_address=contracts.delegate)
        with cluster.connect("audius") as conn:
            conn.execute("CREATE EXTENSION audius_indexer")
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'audius_indexer'").fetchone()[0]
            print(f"CREATE EXTENSION audius_indexer: version {version}")
            checks = conn.execute("SELECT check_name, ok, detail FROM audius_indexer.doctor()").fetchall()
            for name, ok, detail in checks:
                print(f"  doctor: {'ok ' if ok else 'BAD'} {name}: {detail[:100]}")
            must = {"settings", "contract multicall3", "contract token", "contract staking", "contract delegate_manager"}
            bad = [c for c in checks if c[0] in must and not c[1]]
            assert not bad and must <= {c[0] for c in checks}, f"doctor failed: {bad}"
            rows = conn.execute("SELECT wallet, balance, error FROM audius_indexer.multicall_total_audio_balances(%s)",
                                (wallets,)).fetchall()
            for w, bal, err in rows:
                want = sum(contracts.read(k, w) for k in ("token", "staking", "delegate"))
                assert err is None and bal == want, (w, bal, want, err)
            print(f"  multicall_total_audio_balances: {len(rows)} wallets equal independent eth_calls")
        cluster.create_database("old")
        with cluster.connect("old") as conn:
            conn.execute("CREATE EXTENSION audius_indexer VERSION '0.1.0'")
            conn.execute("ALTER EXTENSION audius_indexer UPDATE")
            v = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'audius_indexer'").fetchone()[0]
            assert v == version, v
            print(f"  CREATE EXTENSION VERSION '0.1.0' + ALTER EXTENSION UPDATE -> {v}")
        print("package smoke test: OK")
        return 0
    finally:
        cluster.destroy()
        anvil.destroy()


if __name__ == "__main__":
    sys.exit(main())
