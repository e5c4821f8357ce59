-- Quality evaluation: the LLM-judge queue, its scores, and human feedback.
-- No foreign keys to llm_logs: that table may be partitioned by time, where a key on request_id
-- alone cannot be referenced. Rows are tied to a record by request_id and checked in code.

-- One row per sampled record. Workers claim rows with FOR UPDATE SKIP LOCKED, so replicas never
-- judge one record twice; a `running` row whose claim is older than the lease is claimable again,
-- which is how a crashed worker's jobs come back. claim_id fences a late worker out: only the
-- holder of the current claim can finish a job.
CREATE TABLE IF NOT EXISTS judge_jobs (
    request_id    UUID PRIMARY KEY,
    model_version TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'error')),
    -- Judge calls made so far (the first try plus retries), at most judge.max_attempts.
    attempts      INTEGER NOT NULL DEFAULT 0,
    available_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_at    TIMESTAMPTZ,
    claim_id      UUID,
    error_type    TEXT,
    last_error    TEXT,
    -- What judging this record cost, metered apart from user traffic.
    judge_model   TEXT,
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd      DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The claim query and the backlog gauge only ever look at open jobs.
CREATE INDEX IF NOT EXISTS judge_jobs_open_idx ON judge_jobs (created_at)
    WHERE status IN ('pending', 'running');

-- One row per judged record and criterion; the primary key makes a re-judge a no-op.
CREATE TABLE IF NOT EXISTS judge_scores (
    request_id    UUID NOT NULL,
    criterion     TEXT NOT NULL,
    score         SMALLINT NOT NULL CHECK (score BETWEEN 1 AND 5),
    rationale     TEXT,
    judge_model   TEXT NOT NULL,
    model_version TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, criterion)
);
CREATE INDEX IF NOT EXISTS judge_scores_model_version_created_at_idx
    ON judge_scores (model_version, created_at);

-- Human ratings: score -1/1 on the thumbs scale or 1..5 on the stars scale, and the rating it
-- maps to. agreement is set once, when both this feedback and the judge's overall score exist.
CREATE TABLE IF NOT EXISTS feedback (
    id            BIGSERIAL PRIMARY KEY,
    request_id    UUID NOT NULL,
    model_version TEXT NOT NULL,
    score         SMALLINT NOT NULL,
    scale         TEXT NOT NULL CHECK (scale IN ('thumbs', 'stars')),
    rating        TEXT NOT NULL CHECK (rating IN ('positive', 'neutral', 'negative')),
    comment       TEXT,
    user_id       TEXT,
    agreement     TEXT CHECK (agreement IN ('agree', 'disagree', 'not_comparable')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((scale = 'thumbs' AND score IN (-1, 1)) OR (scale = 'stars' AND score BETWEEN 1 AND 5))
);
CREATE INDEX IF NOT EXISTS feedback_request_id_idx ON feedback (request_id);
CREATE INDEX IF NOT EXISTS feedback_model_version_created_at_idx ON feedback (model_version, created_at);
