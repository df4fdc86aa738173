-- Catalogue: categories, product categories and attributes, and search.
--
-- Search runs in Postgres over rm_products: a generated tsvector (the
-- `simple` configuration for exact words and prefixes, `english` for word
-- forms, both over unaccented text) with a GIN index, and a generated
-- lower-cased, unaccented text with a trigram index for typos.

CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- unaccent() is only STABLE (it reads its dictionary by name); generated
-- columns and index expressions need IMMUTABLE, which naming the dictionary
-- makes true.
CREATE FUNCTION agora_unaccent(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT public.unaccent('public.unaccent'::regdictionary, $1) $$;

-- The attribute values of a product, as one text.
CREATE FUNCTION agora_attribute_text(jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT coalesce(string_agg(value, ' '), '') FROM jsonb_each_text($1) $$;

ALTER TABLE rm_products
    ADD COLUMN category_ids jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN attributes   jsonb NOT NULL DEFAULT '{}';

ALTER TABLE rm_products
    ADD COLUMN search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, public.agora_unaccent(name || ' ' || sku)), 'A')
        || setweight(to_tsvector('english'::regconfig, public.agora_unaccent(name)), 'A')
        || setweight(to_tsvector('simple'::regconfig, public.agora_unaccent(public.agora_attribute_text(attributes))), 'B')
        || setweight(to_tsvector('english'::regconfig, public.agora_unaccent(public.agora_attribute_text(attributes))), 'B')
        || setweight(to_tsvector('simple'::regconfig, public.agora_unaccent(coalesce(description, ''))), 'C')
        || setweight(to_tsvector('english'::regconfig, public.agora_unaccent(coalesce(description, ''))), 'C')
    ) STORED,
    ADD COLUMN search_text text GENERATED ALWAYS AS (
        lower(public.agora_unaccent(
            name || ' ' || sku || ' ' || public.agora_attribute_text(attributes) || ' ' || coalesce(description, '')))
    ) STORED;

CREATE INDEX rm_products_search ON rm_products USING gin (search);
CREATE INDEX rm_products_search_trgm ON rm_products USING gin (search_text gin_trgm_ops);
-- jsonb_ops, for `?|` (listed in any of these categories).
CREATE INDEX rm_products_categories ON rm_products USING gin (category_ids);
CREATE INDEX rm_products_attributes ON rm_products USING gin (attributes jsonb_path_ops);
CREATE INDEX rm_products_newest ON rm_products (created_at DESC, id DESC);
CREATE INDEX rm_products_price ON rm_products (price_amount, id);
CREATE INDEX rm_products_name ON rm_products (name, id);

-- The category tree: one row per live category. `path` holds its ancestors'
-- ids from the top; `tree_path` is the same as text ending in its own id
-- (`/a/b/c/`), so a category's descendants are a prefix match;
-- `product_count` counts the distinct products listed in it or in any of
-- its descendants.
CREATE TABLE rm_categories (
    id            uuid PRIMARY KEY,
    slug          text        NOT NULL,
    name          text        NOT NULL,
    parent_id     uuid,
    position      integer     NOT NULL,
    path          jsonb       NOT NULL,
    tree_path     text        NOT NULL,
    depth         integer     NOT NULL,
    direct_count  bigint      NOT NULL,
    product_count bigint      NOT NULL,
    version       bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX rm_categories_slug ON rm_categories (slug);
CREATE INDEX rm_categories_parent ON rm_categories (parent_id);
CREATE INDEX rm_categories_tree_path ON rm_categories (tree_path text_pattern_ops);

-- The categories model's own copy of each product's list, from which it
-- counts (and recounts, when a category moves).
CREATE TABLE rm_category_listings (
    product_id   uuid PRIMARY KEY,
    category_ids jsonb NOT NULL
);
