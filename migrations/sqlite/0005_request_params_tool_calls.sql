-- The request's parameters (the client's body without the conversation, subject to
-- logging.content) and the answer's tool calls, both JSON text; NULL when there are none.
ALTER TABLE llm_logs ADD COLUMN request_params TEXT;
ALTER TABLE llm_logs ADD COLUMN tool_calls TEXT;
