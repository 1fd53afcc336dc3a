-- The commit message each version suggested (a Conventional Commits subject; '' when it made
-- none), so versions' suggestions can be compared per commit from ClickHouse like their labels.
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS suggested_message String DEFAULT '' AFTER prompt_hash;
