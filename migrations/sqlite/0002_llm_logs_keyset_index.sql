-- Keyset pagination of GET /v1/logs walks (created_at, request_id) newest first; this index
-- serves it and every created_at range, so the created_at-only index is redundant.
-- (PostgreSQL's 0002 partitions llm_logs by time; SQLite has no partitions, and its retention
-- deletes old rows in chunks instead.)
CREATE INDEX IF NOT EXISTS llm_logs_created_at_request_id_idx ON llm_logs (created_at, request_id);
DROP INDEX IF EXISTS llm_logs_created_at_idx;
