-- The relay lease: which outbox relay may publish, until when (Unix ms).
-- One row, taken by FetchOutbox when it is free or expired and renewed by
-- its holder, so one relay publishes at a time however many run.
CREATE TABLE relay_lease (
    name          TEXT   PRIMARY KEY,   -- 'outbox'
    holder        TEXT   NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
