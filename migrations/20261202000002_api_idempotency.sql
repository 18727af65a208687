-- Answers of metered-API requests sent with an Idempotency-Key (server::metered::idempotency).
-- A key is scoped to the API key that sent it and bound to the request's hash; the answer is
-- written in the same transaction as the spend, so a recorded answer always means the spend
-- committed, and a spend under a client key always has its answer.
CREATE TABLE api_idempotency (
    api_key_id   uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    client_key   text NOT NULL CHECK (length(client_key) BETWEEN 1 AND 255),
    request_hash bytea NOT NULL,
    status_code  smallint NOT NULL,
    headers      jsonb NOT NULL,
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, client_key)
);
-- For pruning answers past their retention.
CREATE INDEX api_idempotency_created_idx ON api_idempotency (created_at);
