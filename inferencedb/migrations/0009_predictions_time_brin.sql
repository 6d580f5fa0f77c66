-- The drift job first asks which models had predictions in the last hour, and builds reports for
-- those only (api/core/monitoring.py): with thousands of models, most have none. A BRIN index on
-- the time answers that from the hour's block ranges instead of reading the day's partition; it
-- is a few pages per partition and costs next to nothing to keep on rows that arrive in time order.
-- Building it blocks inserts into each partition while it reads it: on a large table, build it
-- first per partition with CREATE INDEX CONCURRENTLY and attach them, or accept the pause; IF NOT
-- EXISTS lets this migration find an index built that way.
CREATE INDEX IF NOT EXISTS predictions_time_brin ON predictions USING brin (created_at);
