-- Pruning finds published outbox rows and old events by time.
CREATE INDEX outbox_published ON outbox (published_at_ms) WHERE published_at_ms IS NOT NULL;
CREATE INDEX events_received ON events (received_at_ms);
