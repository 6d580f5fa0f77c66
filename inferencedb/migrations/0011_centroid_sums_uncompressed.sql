-- 0011: the centroid sums are stored out of line without compression.
-- A row's vector_sum (384 or 1,152 doubles: 3-9 KB) is past the 2 KB at which PostgreSQL moves a
-- value out of line, and by default it first tries to compress it. Sums of embeddings do not
-- compress (the table was as large either way), so every row paid for a failed pglz attempt:
-- COPY of 2,000 rows of 1,152 doubles took 537-558 ms with it and 276-348 ms without
-- (loadtests/bench_centroid_storage.py), and a router with 10,000 active models writes one row
-- per model and worker every minute.
ALTER TABLE embedding_centroids ALTER COLUMN vector_sum SET STORAGE EXTERNAL;
