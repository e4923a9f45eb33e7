-- The id claim that exactly-once events add to each event's transaction.
-- The random id stands for the client's unique event_id.
\set receipt random(1, 9000000000000000000)
INSERT INTO event_receipts (center_id, event_id, response, received_at) VALUES (:center, 'pgbench-' || :client_id || '-' || :receipt, '{"message":"Event processed successfully","event_type":"order_created","center":"Benchmark clinic","date":"2026-12-04"}', now()) ON CONFLICT DO NOTHING;
