-- 0005: what the model lifecycle needs: shadow agreement, accuracy measured on feedback, and the
-- live embedding centroid (for drift), as documented views and one aggregate table.

-- How often each shadow agrees with the answer the caller got, per UTC day.
CREATE VIEW shadow_agreement_daily AS
SELECT (a.created_at AT TIME ZONE 'UTC')::date AS day,
       a.tenant,
       a.model,
       a.version AS answered_version,
       s.version AS shadow_version,
       count(*) AS compared,
       count(*) FILTER (WHERE a.label = s.label) AS agreed
FROM predictions a
JOIN predictions s
  ON s.tenant = a.tenant AND s.request_id = a.request_id AND s.item_index = a.item_index
 AND s.model = a.model AND s.role = 'shadow' AND s.status = 'ok'
WHERE a.role IN ('primary', 'candidate', 'fallback') AND a.status = 'ok'
GROUP BY 1, 2, 3, 4, 5;

COMMENT ON VIEW shadow_agreement_daily IS 'Per UTC day, model, answering version and shadow version: answered items the shadow also scored (compared) and how many got the same label (agreed). agreed / compared is the agreement rate.';

-- Accuracy measured on the predictions that received feedback, per UTC day of the prediction.
CREATE VIEW feedback_accuracy_daily AS
SELECT (p.created_at AT TIME ZONE 'UTC')::date AS day,
       p.tenant,
       p.model,
       p.version,
       p.role,
       count(*) AS with_feedback,
       count(*) FILTER (WHERE p.label = f.label) AS correct
FROM predictions p
JOIN feedback f ON f.tenant = p.tenant AND f.request_id = p.request_id AND f.item_index = p.item_index
WHERE p.role IN ('primary', 'candidate', 'fallback') AND p.status = 'ok'
GROUP BY 1, 2, 3, 4, 5;

COMMENT ON VIEW feedback_accuracy_daily IS 'Per UTC day (of the prediction), model, version and role: answered items that received feedback, and how many the head had right. correct / with_feedback is the accuracy measured on feedback (biased towards items people chose to correct).';

-- Sums of the embeddings each router worker saw, per minute: the live centroid of a window is
-- sum(vector_sum) / sum(n). Kept apart from predictions because a vector per row is too big.
CREATE TABLE embedding_centroids (
    bucket_start timestamptz      NOT NULL,
    tenant       text             NOT NULL DEFAULT 'default',
    model        text             NOT NULL,
    version      text             NOT NULL,
    n            bigint           NOT NULL,
    vector_sum   double precision[] NOT NULL
);

CREATE INDEX embedding_centroids_model_time ON embedding_centroids (tenant, model, version, bucket_start);

COMMENT ON TABLE embedding_centroids IS 'Per minute and router worker: how many embeddings a model version scored (n) and their element-wise sum. The live embedding centroid over a window is sum(vector_sum) / sum(n); its cosine distance to the training centroid measures input drift.';
