-- audius_indexer finalize: privileges. Runs last in CREATE EXTENSION.
-- Functions that reach the network or write balances are not for PUBLIC.
REVOKE ALL ON SCHEMA audius_indexer FROM PUBLIC;
GRANT USAGE ON SCHEMA audius_indexer TO audius_indexer_operator;
REVOKE EXECUTE ON FUNCTION audius_indexer.multicall_total_audio_balances(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audius_indexer.multicall_total_audio_balances(text[]) TO audius_indexer_operator;
