-- Records are keyed by an id the gateway generates; the client's own x-request-id (any text up
-- to 128 characters) is kept here, indexed for GET /v1/logs/{id} and the client_request_id
-- filter. Before, a reused x-request-id made every call after the first one a duplicate that
-- ON CONFLICT(request_id) dropped.
ALTER TABLE llm_logs ADD COLUMN client_request_id TEXT;
CREATE INDEX IF NOT EXISTS llm_logs_client_request_id_idx
    ON llm_logs (client_request_id, created_at) WHERE client_request_id IS NOT NULL;
