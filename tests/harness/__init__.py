"""Test harness: real PostgreSQL 15 clusters (run as the `postgres` OS user), anvil, an RPC proxy."""
