-- Group commit, as measured (issue 27): in `scripts/bench`, a sixth of the database's time in a
-- spend batch went to planning its statements again on every call. PL/pgSQL caches each
-- statement's plan but, its parameters being arrays and a timestamp, kept choosing a plan made
-- for the call's values ("custom") over the cached one. Every statement of a spend looks rows
-- up by an account, a bucket or a key through an index, whatever the values, so the cached
-- ("generic") plan is the same plan without the planning: measured with pgbench on 10,000
-- accounts, batches of 5 spends went from 1,463 to 1,851 a second (two clients), single spends
-- from 3,005 to 3,478 (four clients). What the functions do is unchanged.

ALTER FUNCTION credit_spend_batch(uuid[], bigint[], text[], jsonb[], timestamptz)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION credit_spend(uuid, bigint, text, jsonb, timestamptz, text)
    SET plan_cache_mode = force_generic_plan;
