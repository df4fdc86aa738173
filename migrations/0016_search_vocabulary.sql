-- Search at size, second step (agora-bench --only search, 100,000 products).
-- EXPLAIN ANALYZE showed two costs that grew with the number of matches,
-- not with the page: the typo test (`<%` against each candidate product's
-- whole text, ~18 µs a row, about 120 ms for one word) and the ranking's
-- word similarity over the same text (as much again).
--
-- Typos now go through a vocabulary: the distinct words of the products'
-- texts, with a trigram index of their own (what pg_trgm's documentation
-- suggests for spelling suggestions). A word of the query is widened to its
-- neighbours in the vocabulary, and the widened query is answered by the
-- tsvector index, so no product's text is compared trigram by trigram.
--
-- The vocabulary only grows: a word no product holds any more widens a
-- query to a term that matches nothing. It is kept by a trigger, so every
-- writer of rm_products (the projector, a replay's shadow copy, which
-- copies the live table's triggers, a bulk load) keeps it.
CREATE TABLE rm_search_words (word text PRIMARY KEY);
CREATE INDEX rm_search_words_trgm ON rm_search_words USING gin (word gin_trgm_ops);

-- The words of a product's search text that a typo can be corrected to:
-- runs of letters (numbers and skus are matched exactly, never by trigram).
CREATE FUNCTION agora_search_words(text) RETURNS SETOF text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT DISTINCT w FROM regexp_split_to_table($1, '[^[:alpha:]]+') w
           WHERE length(w) >= 3 ORDER BY w $$;

CREATE FUNCTION agora_learn_search_words() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- In word order, so two writers never wait on each other crosswise.
    INSERT INTO public.rm_search_words (word)
    SELECT public.agora_search_words(NEW.search_text)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER rm_products_learn_words_insert AFTER INSERT ON rm_products
    FOR EACH ROW EXECUTE FUNCTION agora_learn_search_words();
-- Stock and price changes leave the text as it was: nothing to learn.
CREATE TRIGGER rm_products_learn_words_update AFTER UPDATE ON rm_products
    FOR EACH ROW WHEN (OLD.search_text IS DISTINCT FROM NEW.search_text)
    EXECUTE FUNCTION agora_learn_search_words();

INSERT INTO rm_search_words (word)
SELECT DISTINCT agora_search_words(search_text) FROM rm_products
ON CONFLICT DO NOTHING;

-- One word of a query as a tsquery: its word forms and unaccented spelling
-- (`simple` and `english`), as a prefix when it is the last word, and, for
-- a word of 5 letters or more, every vocabulary word within one typo
-- (pg_trgm's word similarity at its threshold).
CREATE FUNCTION agora_word_query(word text, prefix boolean) RETURNS tsquery
    LANGUAGE sql STABLE PARALLEL SAFE STRICT
    AS $$
SELECT CASE WHEN typos.q IS NULL THEN base.q ELSE base.q || typos.q END
  FROM (SELECT to_tsquery('simple', quote_literal(public.agora_unaccent($1)) || CASE WHEN $2 THEN ':*' ELSE '' END)
               || to_tsquery('english', quote_literal(public.agora_unaccent($1))) AS q) base,
       (SELECT to_tsquery('simple', string_agg(quote_literal(v.word), ' | ')) AS q
          FROM public.rm_search_words v
         WHERE char_length($1) >= 5 AND lower(public.agora_unaccent($1)) <% v.word) typos
$$;

-- The exact-name test of the ranking, stored: computing it for every match
-- (unaccent per row) cost more than finding the matches.
ALTER TABLE rm_products
    ADD COLUMN name_key text GENERATED ALWAYS AS (lower(public.agora_unaccent(name))) STORED;

-- The typo branch no longer reads the products' text by trigrams.
DROP INDEX rm_products_search_trgm;
