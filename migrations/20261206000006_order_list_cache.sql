-- A customer's order list as Polar last answered it (the invoices on /settings/billing).
--
-- /settings/billing listed the orders from Polar over HTTP on every render: each render spent
-- a call of the user's budget and of Polar's quota, and past 60 renders a minute the page said
-- "Invoices can't be listed". The list is now kept here for 60 s per customer (shared by every
-- instance), marked stale by any order webhook about the customer and by an invoice request,
-- so it is re-read only when it may have changed.

CREATE TABLE polar_order_lists (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    orders     jsonb NOT NULL,
    fetched_at timestamptz NOT NULL,
    stale      boolean NOT NULL DEFAULT false
);
