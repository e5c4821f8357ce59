-- Client API keys (only a SHA-256 of each key is stored, plus a short prefix to find it) and the
-- audit trail of key management and admin actions.

CREATE TABLE IF NOT EXISTS api_keys (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL,
    -- The key's first characters (`lqo_` + 8), shown in listings and used to find the row.
    prefix       TEXT NOT NULL,
    -- Lowercase hex SHA-256 of the whole key.
    key_hash     TEXT NOT NULL UNIQUE,
    -- Comma-separated: chat, feedback, logs:read, admin.
    scopes       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

-- A name belongs to one live key at a time; a revoked key's name can be given to its successor.
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name_idx ON api_keys (name) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS api_keys_prefix_idx ON api_keys (prefix);

CREATE TABLE IF NOT EXISTS audit_log (
    id         BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- `cli`, or the name of the admin key that acted.
    actor      TEXT NOT NULL,
    -- e.g. key.create, key.revoke, key.list.
    action     TEXT NOT NULL,
    target     TEXT,
    details    JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX IF NOT EXISTS audit_log_created_at_idx ON audit_log (created_at);
