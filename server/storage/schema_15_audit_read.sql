-- migration: 15
-- The audit trail read by people (issue 12, part 6: GET /v1/audit/events, /v1/audit/export).
--
-- Pages are newest first by (received_at, device_id, epoch, seq) with a keyset cursor
-- (server/audit/query.py): audit_events_newest is that order, so a page is an index walk from
-- the cursor whatever its depth; audit_events_device_newest the same within one kiosk
-- (?device=…), without sorting the kiosk's whole history. audit_events_newest starts with
-- received_at, so it also serves `kiosk server prune` (server/audit/retention.py), and the
-- plain received_at index of migration 10 goes: one index fewer for every stored event.
-- On PostgreSQL an index on the partitioned audit_events is made on every partition, and on
-- every partition made later.

CREATE INDEX audit_events_newest ON audit_events (received_at, device_id, epoch, seq);

CREATE INDEX audit_events_device_newest ON audit_events (device_id, received_at, epoch, seq);

DROP INDEX audit_events_received;
