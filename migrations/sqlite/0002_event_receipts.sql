-- Ids of events already counted, so that a retried event counts once. The
-- service keeps each id for at least seven days and then purges it; the
-- response text is what a repeat of the event is answered with.
CREATE TABLE event_receipts (
    center_id   INTEGER NOT NULL REFERENCES centers (id),
    event_id    TEXT    NOT NULL,
    response    TEXT    NOT NULL,
    received_at TEXT    NOT NULL,
    PRIMARY KEY (center_id, event_id)
) WITHOUT ROWID;

CREATE INDEX event_receipts_received_at ON event_receipts (received_at);
