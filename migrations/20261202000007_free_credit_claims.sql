-- The free credits are one inbox's, once: `inbox` is the address's inbox as
-- `domain::email::Email::inbox` tells it (lower-cased, without `+tag`, Gmail without dots).
-- A claim outlives its account, so deleting an account and signing up again earns nothing.
CREATE TABLE free_credit_claims (
    inbox      text PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- Accounts that already received their free credits have claimed their inbox.
INSERT INTO free_credit_claims (inbox, user_id, claimed_at)
SELECT DISTINCT ON (inbox) inbox, user_id, created_at FROM (
    SELECT lower(split_part(split_part(u.email, '@', 1), '+', 1) || '@' || split_part(u.email, '@', 2)) AS inbox, u.id AS user_id, o.created_at
      FROM credit_operations o JOIN users u ON u.id = o.user_id
     WHERE o.idempotency_key = 'free:' || u.id
) claimed ORDER BY inbox, created_at
ON CONFLICT (inbox) DO NOTHING;
