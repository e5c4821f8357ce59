//! Statements both backends accept, written once (sqlx's SQLite driver takes `$1` like
//! PostgreSQL). Only the values bound differ: a uuid is a `uuid` on PostgreSQL and its text on
//! SQLite, JSON is `jsonb` or text. Statements that cannot be shared (PostgreSQL's `UNNEST`,
//! `FOR UPDATE SKIP LOCKED`, its own clock) live in `postgres/` and `sqlite/`.

/// The columns of a `LogRecord`, in the order every statement and row decoder uses.
macro_rules! log_columns {
    () => {
        "request_id, created_at, endpoint, user_id, prompt, response, model_version, provider, \
         upstream_model, latency_ms, ttft_ms, input_tokens, cached_input_tokens, output_tokens, \
         cost_usd, status, http_status, error_type, error_message, finish_reason, streamed, tags, \
         metadata, heuristic_label, heuristic_results, api_key_name, request_params, tool_calls, \
         client_request_id"
    };
}
pub(crate) use log_columns;

/// The row of a request id that every reader uses: partitioned by time, `request_id` alone is
/// not unique on PostgreSQL (rows written before migration 0007, when a reused client
/// `x-request-id` was the key, can share one), and the newest one is the answer — for `get_log`,
/// the judge's material and the feedback's model version alike.
macro_rules! newest_log_row {
    () => {
        " FROM llm_logs WHERE request_id = $1 ORDER BY created_at DESC LIMIT 1"
    };
}

pub const PING: &str = "SELECT 1";
pub const PROBE_WRITES: &str = "SELECT 1 FROM llm_logs WHERE false";
pub const COUNT_LOGS: &str = "SELECT COUNT(*) FROM llm_logs";

pub const GET_LOG: &str = concat!("SELECT ", log_columns!(), newest_log_row!());
pub const JUDGE_MATERIAL: &str = concat!(
    "SELECT prompt, response, status, model_version",
    newest_log_row!()
);
pub const LOG_MODEL_VERSION: &str = concat!("SELECT model_version", newest_log_row!());

/// The newest record a client's own `x-request-id` names (it may reuse one).
macro_rules! newest_client_row {
    () => {
        " FROM llm_logs WHERE client_request_id = $1 ORDER BY created_at DESC LIMIT 1"
    };
}
pub const GET_LOG_BY_CLIENT_ID: &str = concat!("SELECT ", log_columns!(), newest_client_row!());
pub const CLIENT_LOG_MODEL_VERSION: &str =
    concat!("SELECT request_id, model_version", newest_client_row!());

// The judge's queue.

pub const OPEN_JOBS: &str = "SELECT COUNT(*) FROM judge_jobs \
     WHERE status IN ('pending', 'running') AND ($1 IS NULL OR created_at <= $1)";
pub const CANDIDATES: &str = "SELECT request_id, model_version, created_at FROM llm_logs \
     WHERE created_at >= $1 AND created_at < $2 AND status = 'ok' AND response IS NOT NULL \
       AND ($3 IS NULL OR model_version = $3) \
       AND ($4 IS NULL OR created_at > $4 OR (created_at = $4 AND request_id > $5)) \
     ORDER BY created_at, request_id LIMIT $6";
pub const JOB_OF: &str = "SELECT status, attempts, error_type, last_error, judge_model, \
     input_tokens, output_tokens, cost_usd, updated_at FROM judge_jobs WHERE request_id = $1";
pub const SCORES_OF: &str = "SELECT criterion, score, rationale, judge_model, created_at \
     FROM judge_scores WHERE request_id = $1 ORDER BY criterion";

// Feedback and agreement.

pub const OVERALL_SCORE: &str =
    "SELECT score FROM judge_scores WHERE request_id = $1 AND criterion = 'overall'";
pub const UNSETTLED_FEEDBACK: &str =
    "SELECT id, rating FROM feedback WHERE request_id = $1 AND agreement IS NULL ORDER BY id";
pub const SETTLE: &str = "UPDATE feedback SET agreement = $2 WHERE id = $1 AND agreement IS NULL";
pub const FEEDBACK_COUNTS: &str = "SELECT model_version, rating, COUNT(*) AS n \
     FROM feedback WHERE created_at >= $1 AND created_at < $2 \
       AND ($3 IS NULL OR model_version = $3) \
     GROUP BY model_version, rating ORDER BY model_version";
/// Each compared answer once: the majority of its ratings' agreement with the judge (more agree
/// than disagree → agree, fewer → disagree, a tie or only neutral sides → not comparable).
pub const ANSWER_AGREEMENTS: &str = "SELECT model_version, verdict, COUNT(*) AS n FROM ( \
       SELECT request_id, model_version, CASE \
         WHEN SUM(CASE WHEN agreement = 'agree' THEN 1 ELSE 0 END) \
            > SUM(CASE WHEN agreement = 'disagree' THEN 1 ELSE 0 END) THEN 'agree' \
         WHEN SUM(CASE WHEN agreement = 'agree' THEN 1 ELSE 0 END) \
            < SUM(CASE WHEN agreement = 'disagree' THEN 1 ELSE 0 END) THEN 'disagree' \
         ELSE 'not_comparable' END AS verdict \
       FROM feedback WHERE created_at >= $1 AND created_at < $2 AND agreement IS NOT NULL \
         AND ($3 IS NULL OR model_version = $3) \
       GROUP BY request_id, model_version) AS answers \
     GROUP BY model_version, verdict ORDER BY model_version";
/// True for the one process that first counts an answer's agreement in the metric.
pub const CLAIM_AGREEMENT_COUNT: &str = "UPDATE judge_jobs SET agreement_counted = true \
     WHERE request_id = $1 AND agreement_counted = false";
pub const FEEDBACK_OF: &str = "SELECT id, request_id, model_version, score, scale, rating, \
     comment, user_id, agreement, created_at FROM feedback WHERE request_id = $1 ORDER BY id";

// Client keys and the audit log.

macro_rules! key_columns {
    () => {
        "name, prefix, key_hash, scopes, created_at, expires_at, revoked_at, last_used_at"
    };
}

pub const INSERT_KEY: &str = "INSERT INTO api_keys \
     (name, prefix, key_hash, scopes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub const KEYS_BY_PREFIX: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE prefix = $1"
);
pub const LIST_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys ORDER BY created_at, id"
);
pub const COUNT_LIVE_KEYS: &str = "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL \
     AND (expires_at IS NULL OR expires_at > $1)";
pub const REVOKE_KEY: &str = concat!(
    "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL RETURNING ",
    key_columns!()
);
pub const TOUCH_KEY: &str = "UPDATE api_keys SET last_used_at = $2 WHERE key_hash = $1";
pub const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (created_at, actor, action, target, details) \
     VALUES ($1, $2, $3, $4, $5)";
pub const RECENT_AUDIT: &str = "SELECT created_at, actor, action, target, details FROM audit_log \
     ORDER BY id DESC LIMIT $1";
