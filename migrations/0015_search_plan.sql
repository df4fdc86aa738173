-- Search at size (agora-bench --only search, 100,000 products): the planner
-- chose a sequential scan over every product, testing each row's text for a
-- typo (`<%`), 1.2 s a query, instead of ORing the indexes (about 0.1 s).
--
-- Word similarity is priced like any operator (cost 1), though it compares
-- every trigram of a product's text: tell the planner what it costs.
ALTER FUNCTION word_similarity_op(text, text) COST 100;
ALTER FUNCTION word_similarity_commutator_op(text, text) COST 100;

-- A search's exact-sku branch is ORed with the text match; without an index
-- of its own that OR can only be answered by scanning the table.
CREATE INDEX rm_products_sku_lower ON rm_products (lower(sku));
