-- Raw log of every model call (embedded default backend). Same columns as PostgreSQL; uuids are
-- lowercase hyphenated TEXT, timestamps RFC 3339 TEXT in UTC, tags a JSON array, metadata JSON.

CREATE TABLE IF NOT EXISTS llm_logs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    user_id             TEXT,
    prompt              TEXT NOT NULL,
    response            TEXT,
    model_version       TEXT NOT NULL,
    latency_ms          REAL NOT NULL,
    status              TEXT NOT NULL,
    request_id          TEXT NOT NULL UNIQUE,
    endpoint            TEXT NOT NULL DEFAULT 'chat',
    provider            TEXT NOT NULL DEFAULT '',
    upstream_model      TEXT NOT NULL DEFAULT '',
    ttft_ms             REAL,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cost_usd            REAL NOT NULL DEFAULT 0,
    http_status         INTEGER NOT NULL DEFAULT 0,
    error_type          TEXT,
    error_message       TEXT,
    finish_reason       TEXT,
    streamed            INTEGER NOT NULL DEFAULT 0,
    tags                TEXT NOT NULL DEFAULT '[]',
    metadata            TEXT NOT NULL DEFAULT '{}',
    heuristic_label     TEXT,
    heuristic_results   TEXT NOT NULL DEFAULT '[]',
    api_key_name        TEXT
);

-- Read paths: time range, per model version over time, per user over time. Tag filters use
-- json_each(tags); SQLite has no inverted index, which is fine at embedded scale.
CREATE INDEX IF NOT EXISTS llm_logs_created_at_idx ON llm_logs (created_at);
CREATE INDEX IF NOT EXISTS llm_logs_model_version_created_at_idx ON llm_logs (model_version, created_at);
CREATE INDEX IF NOT EXISTS llm_logs_user_id_created_at_idx ON llm_logs (user_id, created_at);
