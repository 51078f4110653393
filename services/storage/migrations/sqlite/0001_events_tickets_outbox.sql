-- SQLite twin of the PostgreSQL schema. Every accepted PETZI delivery, the current state of each ticket, and the
-- outbox the relay publishes from. Times are Unix milliseconds (BIGINT), the
-- same in PostgreSQL and SQLite.

CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id    TEXT   NOT NULL UNIQUE,   -- hex SHA-256 of the raw body
    event_type     TEXT   NOT NULL,          -- ticket_created | ticket_updated
    ticket_number  TEXT   NOT NULL,
    payload        BLOB   NOT NULL,          -- the raw body as received
    signed_at_ms   BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL
);
CREATE INDEX events_ticket_number ON events (ticket_number);

CREATE TABLE tickets (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT, -- order of first sight: the list cursor
    number              TEXT   NOT NULL UNIQUE,
    ticket_type         TEXT   NOT NULL,
    title               TEXT   NOT NULL,
    category            TEXT   NOT NULL,
    event_id            BIGINT NOT NULL,
    event_name          TEXT   NOT NULL,
    cancellation_reason TEXT   NOT NULL,
    promoter            TEXT   NOT NULL,
    price_cents         BIGINT NOT NULL,       -- exact: PETZI amounts have two decimals
    currency            TEXT   NOT NULL,
    last_event          TEXT   NOT NULL,
    detail              BLOB   NOT NULL,       -- the last TicketEvent, protobuf-encoded
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL
);
CREATE INDEX tickets_category ON tickets (category, seq);
CREATE INDEX tickets_event_id ON tickets (event_id, seq);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,     -- publish order
    message_id      TEXT   NOT NULL UNIQUE,    -- = delivery_id, stable across redeliveries
    routing_key     TEXT   NOT NULL,
    ticket_number   TEXT   NOT NULL,
    payload         BLOB   NOT NULL,           -- the TicketEvent, protobuf-encoded
    created_at_ms   BIGINT NOT NULL,
    published_at_ms BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at_ms IS NULL;
