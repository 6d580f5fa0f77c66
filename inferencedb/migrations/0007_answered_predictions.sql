-- 0007: one definition of an answered prediction, the row whose label the caller received.
--
-- A request writes one row per text per head: the row that answered (role primary, candidate or
-- fallback, status ok) and rows that did not (shadows, failures). Every query about what callers
-- got (feedback, accuracy, agreement, training on corrections) reads this view, so the rule
-- lives here and nowhere else. The planner inlines the view: partition pruning on created_at and
-- the indexes of predictions apply as before.
CREATE VIEW answered_predictions AS
SELECT *
FROM predictions
WHERE role IN ('primary', 'candidate', 'fallback') AND status = 'ok';

COMMENT ON VIEW answered_predictions IS 'The rows whose label the caller received: role primary, candidate or fallback, and status ok. One row per request_id and item_index.';

-- The lifecycle views of 0005, now written on answered_predictions (same columns, same rows).
CREATE OR REPLACE VIEW shadow_agreement_daily AS
SELECT (a.created_at AT TIME ZONE 'UTC')::date AS day,
       a.tenant,
       a.model,
       a.version AS answered_version,
       s.version AS shadow_version,
       count(*) AS compared,
       count(*) FILTER (WHERE a.label = s.label) AS agreed
FROM answered_predictions a
JOIN predictions s
  ON s.tenant = a.tenant AND s.request_id = a.request_id AND s.item_index = a.item_index
 AND s.model = a.model AND s.role = 'shadow' AND s.status = 'ok'
GROUP BY 1, 2, 3, 4, 5;

CREATE OR REPLACE VIEW feedback_accuracy_daily AS
SELECT (p.created_at AT TIME ZONE 'UTC')::date AS day,
       p.tenant,
       p.model,
       p.version,
       p.role,
       count(*) AS with_feedback,
       count(*) FILTER (WHERE p.label = f.label) AS correct
FROM answered_predictions p
JOIN feedback f ON f.tenant = p.tenant AND f.request_id = p.request_id AND f.item_index = p.item_index
GROUP BY 1, 2, 3, 4, 5;
