-- Search at size, third step. A GIN index takes new entries into a pending
-- list (4 MB by default) that every scan reads row by row until a vacuum or
-- a full list merges it. After 100,000 products were loaded, 20,000
-- pending entries made the category filter take 14 ms where the merged
-- index answers in 1.5 ms; the catalogue's writers (the projector, an
-- import) leave such lists between autovacuum's visits. A small list keeps
-- the batching of inserts and bounds what a search reads: loading the same
-- 100,000 products took as long, and left 80 entries pending.
ALTER INDEX rm_products_search SET (gin_pending_list_limit = 64);
ALTER INDEX rm_products_categories SET (gin_pending_list_limit = 64);
ALTER INDEX rm_products_attributes SET (gin_pending_list_limit = 64);
