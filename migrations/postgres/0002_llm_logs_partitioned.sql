-- llm_logs becomes partitioned by time, so retention drops whole days instead of deleting rows.
--
-- Layout afterwards:
--   llm_logs                   PARTITION BY RANGE (created_at), PRIMARY KEY (request_id, created_at)
--   llm_logs_pYYYYMMDD         one per UTC day [day, day+1), created here for today .. today+7 and
--                              then ahead by the gateway's maintenance job (lqo_create_log_partition)
--   llm_logs_before_YYYYMMDD   only if the table had older rows: everything before the day this
--                              migration ran; dropped whole once that day is past the retention
--   llm_logs_default           the DEFAULT partition: whatever no other partition covers (a record
--                              replayed from a day already dropped, a clock far off), so an
--                              insert never fails for want of a partition
--
-- Why the key changes: a unique key of a partitioned table must contain the partition key, so
-- request_id alone can no longer be UNIQUE. The key is (request_id, created_at). created_at is
-- set by the gateway when the call starts and travels with the record through the spool, so a
-- replayed record collides with its stored copy and the writer's
-- ON CONFLICT (request_id, created_at) DO NOTHING stays idempotent. What changes: a client that
-- reuses one x-request-id for two calls now gets two rows (before, the second was dropped).
--
-- Migration path: the existing table (the Python service's, upgraded by 0001, or 0001's own) is
-- renamed, a partitioned llm_logs is created, every row is copied over, and the old table is
-- dropped; the id sequence moves to the new table, so ids keep counting. sqlx runs this in one
-- transaction: it either happens whole or not at all, and the table is locked while rows move
-- (measured: 23 s for a one-million-row seed table on a 2-core VM, 0001's upgrade included).
-- Gateways of the previous version must be stopped first: their ON CONFLICT (request_id) no
-- longer matches a unique key, so their inserts would fail. Rows without a created_at (possible
-- in the seed table) get 1970-01-01, i.e. count as oldest. For tables far too big to copy in one
-- maintenance window, the alternative is to attach the old table as the `llm_logs_before_*`
-- partition instead of copying it (same columns and types required); not automated here.

-- A column added to the table by hand would be lost by the copy below; refuse instead.
DO $$
DECLARE
    extra text;
BEGIN
    SELECT string_agg(column_name::text, ', ' ORDER BY column_name) INTO extra
    FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'llm_logs'
      AND column_name NOT IN (
        'id', 'created_at', 'user_id', 'prompt', 'response', 'model_version', 'latency_ms',
        'status', 'request_id', 'endpoint', 'provider', 'upstream_model', 'ttft_ms',
        'input_tokens', 'cached_input_tokens', 'output_tokens', 'cost_usd', 'http_status',
        'error_type', 'error_message', 'finish_reason', 'streamed', 'tags', 'metadata',
        'heuristic_label', 'heuristic_results', 'api_key_name');
    IF extra IS NOT NULL THEN
        RAISE EXCEPTION 'llm_logs has columns that migration 0002 does not know: %', extra
            USING HINT = 'Copy them elsewhere and drop them from llm_logs, then start the gateway (or run lqo migrate) again.';
    END IF;
END
$$;

ALTER TABLE llm_logs RENAME TO llm_logs_unpartitioned;

CREATE TABLE llm_logs (
    id                  BIGINT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_id             TEXT,
    prompt              TEXT NOT NULL,
    response            TEXT,
    model_version       TEXT NOT NULL,
    latency_ms          DOUBLE PRECISION NOT NULL,
    status              TEXT NOT NULL,
    request_id          UUID NOT NULL DEFAULT gen_random_uuid(),
    endpoint            TEXT NOT NULL DEFAULT 'chat',
    provider            TEXT NOT NULL DEFAULT '',
    upstream_model      TEXT NOT NULL DEFAULT '',
    ttft_ms             DOUBLE PRECISION,
    input_tokens        BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens       BIGINT NOT NULL DEFAULT 0,
    cost_usd            DOUBLE PRECISION NOT NULL DEFAULT 0,
    http_status         INTEGER NOT NULL DEFAULT 0,
    error_type          TEXT,
    error_message       TEXT,
    finish_reason       TEXT,
    streamed            BOOLEAN NOT NULL DEFAULT false,
    tags                TEXT[] NOT NULL DEFAULT '{}',
    metadata            JSONB NOT NULL DEFAULT '{}'::jsonb,
    heuristic_label     TEXT,
    heuristic_results   JSONB NOT NULL DEFAULT '[]'::jsonb,
    api_key_name        TEXT,
    -- Named: the old table's llm_logs_pkey still exists at this point.
    CONSTRAINT llm_logs_request_id_created_at_pkey PRIMARY KEY (request_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE llm_logs_default PARTITION OF llm_logs DEFAULT;

-- Creates the partition of one UTC day unless it exists; true if it created it. Rows of that day
-- that already sit in the DEFAULT partition are moved into it first (a plain CREATE … PARTITION
-- OF would fail on them). Serialised by an advisory lock, so replicas can all run it.
CREATE OR REPLACE FUNCTION lqo_create_log_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    part text := 'llm_logs_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    PERFORM pg_advisory_xact_lock(7305162548001);
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM llm_logs_default WHERE created_at >= lo AND created_at < hi) THEN
        EXECUTE format('CREATE TABLE %I (LIKE llm_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM llm_logs_default WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
        EXECUTE format('ALTER TABLE llm_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF llm_logs FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    END IF;
    RETURN true;
END
$fn$;

DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    seq text := pg_get_serial_sequence('llm_logs_unpartitioned', 'id');
BEGIN
    IF EXISTS (SELECT 1 FROM llm_logs_unpartitioned
               WHERE created_at IS NULL OR created_at < today::timestamp AT TIME ZONE 'UTC') THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF llm_logs FOR VALUES FROM (MINVALUE) TO (%L)',
                       'llm_logs_before_' || to_char(today, 'YYYYMMDD'),
                       today::timestamp AT TIME ZONE 'UTC');
    END IF;
    FOR d IN 0..7 LOOP
        PERFORM lqo_create_log_partition(today + d);
    END LOOP;

    -- Keep the ids counting where they were (a seed table's SERIAL is int4: widen it).
    IF seq IS NULL THEN
        CREATE SEQUENCE llm_logs_id_seq AS bigint;
        seq := 'llm_logs_id_seq';
        PERFORM setval(seq, COALESCE((SELECT max(id) FROM llm_logs_unpartitioned), 0) + 1, false);
    END IF;
    EXECUTE format('ALTER SEQUENCE %s AS bigint OWNED BY llm_logs.id', seq);
    EXECUTE format('ALTER TABLE llm_logs ALTER COLUMN id SET DEFAULT nextval(%L::regclass)', seq);
END
$$;

INSERT INTO llm_logs (
    id, created_at, user_id, prompt, response, model_version, latency_ms, status, request_id,
    endpoint, provider, upstream_model, ttft_ms, input_tokens, cached_input_tokens, output_tokens,
    cost_usd, http_status, error_type, error_message, finish_reason, streamed, tags, metadata,
    heuristic_label, heuristic_results, api_key_name)
SELECT
    id, COALESCE(created_at, 'epoch'), user_id, prompt, response, model_version, latency_ms,
    status, request_id, endpoint, provider, upstream_model, ttft_ms, input_tokens,
    cached_input_tokens, output_tokens, cost_usd, http_status, error_type, error_message,
    finish_reason, streamed, tags, metadata, heuristic_label, heuristic_results, api_key_name
FROM llm_logs_unpartitioned;

DROP TABLE llm_logs_unpartitioned;

-- Read paths, built after the copy (faster than maintaining them row by row). Keyset pagination
-- of GET /v1/logs walks (created_at, request_id) newest first.
CREATE INDEX llm_logs_created_at_request_id_idx ON llm_logs (created_at, request_id);
CREATE INDEX llm_logs_model_version_created_at_idx ON llm_logs (model_version, created_at);
CREATE INDEX llm_logs_user_id_created_at_idx ON llm_logs (user_id, created_at);
CREATE INDEX llm_logs_tags_idx ON llm_logs USING GIN (tags);
