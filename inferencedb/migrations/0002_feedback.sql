-- 0002: feedback, the label a user or reviewer says an item should have had.
--
-- One row per (tenant, request_id, item_index): sending feedback again for the same item is an
-- upsert by the API, not a second vote. Joined to predictions on (tenant, request_id, item_index).

CREATE TABLE feedback (
    tenant     text        NOT NULL DEFAULT 'default',
    request_id text        NOT NULL,
    item_index integer     NOT NULL DEFAULT 0,
    model      text,
    label      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    client_id  text,
    CONSTRAINT feedback_one_per_item UNIQUE (tenant, request_id, item_index)
);

CREATE INDEX feedback_model_time ON feedback (model, created_at);

COMMENT ON TABLE feedback IS 'The correct label for a predicted item, as reported by a client or a reviewer; one row per (tenant, request_id, item_index).';
COMMENT ON COLUMN feedback.request_id IS 'request_id of the prediction the feedback is about.';
COMMENT ON COLUMN feedback.item_index IS 'item_index of that prediction.';
COMMENT ON COLUMN feedback.model IS 'Head the feedback is about, when the client said; NULL means the primary head of the request.';
COMMENT ON COLUMN feedback.label IS 'The label the item should have had.';
COMMENT ON COLUMN feedback.created_at IS 'When the feedback arrived (UTC).';
COMMENT ON COLUMN feedback.client_id IS 'Application or person that sent it.';
