-- The trace context of the delivering request, published with the message.
ALTER TABLE outbox ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
