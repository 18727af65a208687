-- The local view of each Polar subscription, kept from webhooks. Polar stays the truth: this
-- row is what the last applied event said, and `polar_modified_at` lets an older event that
-- arrives late be recognised and ignored.
CREATE TABLE subscriptions (
    id                   text PRIMARY KEY,
    user_id              uuid NOT NULL REFERENCES users (id),
    product_id           text NOT NULL,
    -- free | pro | business | enterprise, from the product; NULL for a product Tally does not map.
    plan                 text,
    status               text NOT NULL,
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    canceled_at          timestamptz,
    ended_at             timestamptz,
    polar_modified_at    timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id);
