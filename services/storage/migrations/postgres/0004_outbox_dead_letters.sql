-- Dead letters: a message that failed for a reason retrying cannot mend, too
-- many times, is kept but no longer fetched, so the messages behind it flow.
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN dead_at_ms BIGINT;
CREATE INDEX outbox_dead ON outbox (id) WHERE dead_at_ms IS NOT NULL;
