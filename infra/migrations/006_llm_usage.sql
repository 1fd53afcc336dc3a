-- LLM backends (litellm, consensus): which model answered and a hash of the exact prompt sent,
-- on every interaction ('' for backends without a model or a prompt). Token counts and cost
-- already have columns (prompt_tokens, completion_tokens, cost_usd) since 001.
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS model LowCardinality(String) DEFAULT '' AFTER cost_usd;
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS prompt_hash String DEFAULT '' AFTER model;
