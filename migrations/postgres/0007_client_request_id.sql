-- Records are keyed by an id the gateway generates (a UUIDv7), never by the client's: a reused
-- x-request-id cost records (SQLite kept one of twenty calls) and let a client pick which calls
-- the judge sampled. The client's own x-request-id, any text up to 128 characters, is kept here,
-- indexed for GET /v1/logs/{id} and the client_request_id filter. Nullable without a default, so
-- adding it to the partitioned table rewrites nothing.
ALTER TABLE llm_logs ADD COLUMN IF NOT EXISTS client_request_id TEXT;
CREATE INDEX IF NOT EXISTS llm_logs_client_request_id_idx
    ON llm_logs (client_request_id, created_at) WHERE client_request_id IS NOT NULL;
