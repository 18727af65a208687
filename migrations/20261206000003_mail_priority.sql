-- Transactional mail first, and alert mail bounded.
--
-- Usage alerts share the mail outbox with verification, password-reset and email-change mail.
-- A burst of alerts (one account moving its low-balance threshold back and forth, or many
-- accounts crossing a line at once) queued in front of a reset link made the person waiting for
-- it wait behind all of them. Mail is now claimed by priority, then age: account mail (0)
-- before any alert mail (1) queued earlier. (How many alert mails one account may get a day is
-- bounded where they are queued: src/server/usage/alerts.rs, ALERT_MAILS_PER_DAY.)

ALTER TABLE outgoing_mail
    ADD COLUMN priority smallint GENERATED ALWAYS AS (CASE WHEN kind = 'usage_alert' THEN 1 ELSE 0 END) STORED;
CREATE INDEX outgoing_mail_claim_idx ON outgoing_mail (priority, id) WHERE status = 'pending';
-- Counting an account's alert mail of the last day reads only its own recent rows.
CREATE INDEX outgoing_mail_user_kind_idx ON outgoing_mail (user_id, kind, created_at);
