-- The scheduled reconcile: subscriptions changed at Polar whose webhook never arrived (the
-- endpoint down for longer than Polar retries) are re-read from Polar on a schedule.
--
-- job_leases: a job that only one instance at a time may run holds a lease row until
-- expires_at, renewing it while it works; another instance takes it over only once it has
-- expired (a crashed holder lets go by itself). polar_customers.reconciled_at: when the
-- account was last re-read, so each pass takes the accounts waiting longest.

CREATE TABLE job_leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

ALTER TABLE polar_customers ADD COLUMN reconciled_at timestamptz;
