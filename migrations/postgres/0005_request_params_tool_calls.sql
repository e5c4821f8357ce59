-- What a call asked for and what the model did besides text: the request's parameters (the
-- client's body without the conversation, subject to logging.content) and the answer's tool
-- calls with their arguments. Nullable and without defaults, so adding them to the partitioned
-- table and its partitions rewrites nothing.
ALTER TABLE llm_logs ADD COLUMN IF NOT EXISTS request_params JSONB;
ALTER TABLE llm_logs ADD COLUMN IF NOT EXISTS tool_calls JSONB;
