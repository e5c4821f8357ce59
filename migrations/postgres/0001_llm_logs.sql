-- Raw log of every model call. Written so that it also upgrades the original Python service's
-- table in place: the seed columns are created only if missing, every new column is added with
-- IF NOT EXISTS and a default, so rows written before the Rust gateway keep their data.

CREATE TABLE IF NOT EXISTS llm_logs (
    id            BIGSERIAL PRIMARY KEY,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_id       TEXT,
    prompt        TEXT NOT NULL,
    response      TEXT,
    model_version TEXT NOT NULL,
    latency_ms    DOUBLE PRECISION NOT NULL,
    status        TEXT NOT NULL
);

-- The seed may have stored naive timestamps; they were UTC.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'llm_logs'
          AND column_name = 'created_at' AND data_type = 'timestamp without time zone'
    ) THEN
        ALTER TABLE llm_logs ALTER COLUMN created_at TYPE TIMESTAMPTZ USING created_at AT TIME ZONE 'UTC';
    END IF;
END
$$;

-- Error rows have no response, and anonymous callers no user.
ALTER TABLE llm_logs ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE llm_logs ALTER COLUMN response DROP NOT NULL;

-- request_id is the idempotency key of the writer (ON CONFLICT (request_id) DO NOTHING). Its default
-- gives seed rows an id and lets an old writer still running during a rollout keep inserting.
ALTER TABLE llm_logs
    ADD COLUMN IF NOT EXISTS request_id          UUID NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    ADD COLUMN IF NOT EXISTS endpoint            TEXT NOT NULL DEFAULT 'chat',
    ADD COLUMN IF NOT EXISTS provider            TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS upstream_model      TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS ttft_ms             DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS input_tokens        BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS output_tokens       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cost_usd            DOUBLE PRECISION NOT NULL DEFAULT 0,
    -- 0 = unknown (rows from before this column existed).
    ADD COLUMN IF NOT EXISTS http_status         INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS error_type          TEXT,
    ADD COLUMN IF NOT EXISTS error_message       TEXT,
    ADD COLUMN IF NOT EXISTS finish_reason       TEXT,
    ADD COLUMN IF NOT EXISTS streamed            BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS tags                TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS metadata            JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS heuristic_label     TEXT,
    ADD COLUMN IF NOT EXISTS heuristic_results   JSONB NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN IF NOT EXISTS api_key_name        TEXT;

-- Read paths: time range, per model version over time, per user over time, by tag.
CREATE INDEX IF NOT EXISTS llm_logs_created_at_idx ON llm_logs (created_at);
CREATE INDEX IF NOT EXISTS llm_logs_model_version_created_at_idx ON llm_logs (model_version, created_at);
CREATE INDEX IF NOT EXISTS llm_logs_user_id_created_at_idx ON llm_logs (user_id, created_at);
CREATE INDEX IF NOT EXISTS llm_logs_tags_idx ON llm_logs USING GIN (tags);
