-- 0004: the exact text each model saw, beside the text as received.
--
-- The router and the embedder normalise text (embedder/normalize.py: Unicode NFC, whitespace,
-- and lower-casing where the model's tokenizer lower-cases anyway) before a model scores it.
-- input_text keeps what the client sent; model_input is what the model read, so an analyst can
-- replay a prediction exactly and see whether normalisation mattered.

ALTER TABLE predictions ADD COLUMN model_input text;

COMMENT ON COLUMN predictions.model_input IS 'The text the model scored, after normalisation (NFC, whitespace collapsed, lower-cased when the model lower-cases). input_text is the text as received.';
