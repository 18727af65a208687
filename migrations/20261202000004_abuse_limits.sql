-- Fixed-window counters for throttles shared by every instance (server::throttle): sign-ups
-- per client address, account mails per address and per user, Polar calls per user.
CREATE TABLE rate_counters (
    scope        text NOT NULL,
    subject      text NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer NOT NULL,
    PRIMARY KEY (scope, subject, window_start)
);
CREATE INDEX rate_counters_window_idx ON rate_counters (window_start);
