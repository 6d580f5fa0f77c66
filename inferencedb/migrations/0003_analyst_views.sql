-- 0003: views for analysts. Days are UTC days, like the partitions.

CREATE VIEW prediction_volume_daily AS
SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
       tenant,
       model,
       version,
       role,
       count(*) AS predictions,
       count(*) FILTER (WHERE status <> 'ok') AS errors,
       avg(probability) AS mean_probability
FROM predictions
GROUP BY 1, 2, 3, 4, 5;

COMMENT ON VIEW prediction_volume_daily IS 'Predictions per UTC day, tenant, model, version and role: how many, how many with a non-ok status, and the mean top-label probability (of rows that have one). A filter on day is checked in every partition; on a long history, query predictions with a created_at range instead.';

CREATE VIEW label_distribution_daily AS
SELECT day,
       tenant,
       model,
       version,
       label,
       count(*) AS predictions,
       count(*)::double precision / sum(count(*)) OVER (PARTITION BY day, tenant, model, version) AS share
FROM (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, tenant, model, version, label
    FROM predictions
    WHERE status = 'ok'
) AS ok_rows
GROUP BY day, tenant, model, version, label;

COMMENT ON VIEW label_distribution_daily IS 'Top labels per UTC day, tenant, model and version, for status ok rows of every role: count and share of that day''s predictions of the same model version (shares of a day sum to 1). A shift in shares between days or versions is the first sign of drift.';

CREATE VIEW confidence_histogram AS
SELECT tenant,
       model,
       version,
       (least(floor(probability * 10), 9) / 10)::numeric(2, 1) AS bucket,
       count(*) AS predictions
FROM predictions
WHERE status = 'ok' AND probability IS NOT NULL
GROUP BY 1, 2, 3, 4;

COMMENT ON VIEW confidence_histogram IS 'Histogram of top-label probability per tenant, model and version over all time, status ok rows: bucket is the lower edge of a 0.1-wide bin (0.9 holds 0.9 <= p <= 1.0). For a time window, query predictions with the same bucket expression and a created_at filter.';

CREATE VIEW low_confidence_predictions AS
SELECT created_at,
       tenant,
       model,
       version,
       role,
       request_id,
       item_index,
       label,
       probability,
       top_k,
       status,
       client_id,
       input_text,
       CASE WHEN label = 'oos' THEN 'out_of_scope' ELSE 'probability_below_0.5' END AS reason
FROM predictions
WHERE status = 'ok' AND (probability < 0.5 OR label = 'oos');

COMMENT ON VIEW low_confidence_predictions IS 'Predictions worth a human look: answered with the out-of-scope label oos (the head found no intent, or its top probability was under the operating threshold), or with a top-label probability below 0.5. Error statuses are not included: they are outages, not model uncertainty. Candidates for labelling.';
