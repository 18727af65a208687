-- What Tally knows is whose, so an id from the browser is checked before Polar is asked
-- (a foreign id costs nothing and reveals nothing), and so account deletion can find the
-- personal data it must scrub.

-- Checkouts Tally created, by user.
CREATE TABLE checkouts (
    id         text PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    item       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkouts_user_idx ON checkouts (user_id);

-- Polar orders known to be a user's: from order webhooks, and from listings Polar answered
-- for that user's customer.
CREATE TABLE polar_orders (
    id         text PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    first_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX polar_orders_user_idx ON polar_orders (user_id);

-- The user a stored webhook is about (from its customer's external id), for scrubbing.
ALTER TABLE webhook_events ADD COLUMN user_id uuid;
CREATE INDEX webhook_events_user_idx ON webhook_events (user_id) WHERE user_id IS NOT NULL;
