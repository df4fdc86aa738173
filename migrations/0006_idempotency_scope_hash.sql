-- Idempotency records are scoped by the SHA-256 (hex) of the client's scope
-- (its token subject or its address) instead of the scope itself, so that a
-- scope of any length fits the primary key's btree index (a 9,000-character
-- token subject overflowed it). Records already stored keep answering.
UPDATE idempotency_keys
   SET scope = encode(sha256(convert_to(scope, 'UTF8')), 'hex')
 WHERE scope !~ '^[0-9a-f]{64}$';
