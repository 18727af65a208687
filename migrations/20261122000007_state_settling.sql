-- When the customer's state last changed (a webhook, or a change Tally made). Polar serves
-- Customer State from a cache that lags a change by about 10 s, so for a while after a change
-- Tally keeps what it reads only briefly (server::billing::SETTLE_WINDOW).
ALTER TABLE polar_customers ADD COLUMN state_changed_at timestamptz;
