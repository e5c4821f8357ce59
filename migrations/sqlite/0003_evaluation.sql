-- Quality evaluation (embedded backend): the LLM-judge queue, its scores, and human feedback.
-- Same columns as PostgreSQL; uuids are lowercase hyphenated TEXT, timestamps RFC 3339 TEXT in
-- UTC (as sqlx writes them, so they compare correctly as text). SQLite has one writer, so jobs
-- are claimed with one UPDATE … RETURNING inside a BEGIN IMMEDIATE transaction.

CREATE TABLE IF NOT EXISTS judge_jobs (
    request_id    TEXT PRIMARY KEY,
    model_version TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'done', 'error')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    available_at  TEXT NOT NULL,
    claimed_at    TEXT,
    claim_id      TEXT,
    error_type    TEXT,
    last_error    TEXT,
    judge_model   TEXT,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS judge_jobs_open_idx ON judge_jobs (created_at)
    WHERE status IN ('pending', 'running');

CREATE TABLE IF NOT EXISTS judge_scores (
    request_id    TEXT NOT NULL,
    criterion     TEXT NOT NULL,
    score         INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    rationale     TEXT,
    judge_model   TEXT NOT NULL,
    model_version TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (request_id, criterion)
);
CREATE INDEX IF NOT EXISTS judge_scores_model_version_created_at_idx
    ON judge_scores (model_version, created_at);

CREATE TABLE IF NOT EXISTS feedback (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT NOT NULL,
    model_version TEXT NOT NULL,
    score         INTEGER NOT NULL,
    scale         TEXT NOT NULL CHECK (scale IN ('thumbs', 'stars')),
    rating        TEXT NOT NULL CHECK (rating IN ('positive', 'neutral', 'negative')),
    comment       TEXT,
    user_id       TEXT,
    agreement     TEXT CHECK (agreement IN ('agree', 'disagree', 'not_comparable')),
    created_at    TEXT NOT NULL,
    CHECK ((scale = 'thumbs' AND score IN (-1, 1)) OR (scale = 'stars' AND score BETWEEN 1 AND 5))
);
CREATE INDEX IF NOT EXISTS feedback_request_id_idx ON feedback (request_id);
CREATE INDEX IF NOT EXISTS feedback_model_version_created_at_idx ON feedback (model_version, created_at);
