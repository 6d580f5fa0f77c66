-- The drift job first asks which models had predictions in the last hour, and builds reports for
-- those only (api/core/monitoring.py): with thousands of models, most have none. A BRIN index on
-- the time answers that from the hour's block ranges instead of reading the day's partition; it
-- is a few pages per partition and costs next to nothing to keep on rows that arrive in time order.
CREATE INDEX predictions_time_brin ON predictions USING brin (created_at);
