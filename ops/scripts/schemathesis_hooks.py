"""Schemathesis hooks for ops/scripts/schemathesis.sh.

JSON Schema counts 2.0 as an integer (draft 6 on), so schemathesis spells
some generated integers as whole floats. The API takes only JSON integers
(api.md: money is never a float; issue 19: `1.0`, `1e2` for integers are
400), a rule no JSON Schema keyword can state. So generated bodies spell
whole floats as integers here, and every other generated value, valid or
not, goes out as generated. The refusal of `2.0` itself is tested by
api/tests/it/hardening.rs and the malformed-request sweep.
"""

import schemathesis


def _integers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: _integers(item) for key, item in value.items()}
    return value


@schemathesis.hook
def map_body(context, body):
    return _integers(body)
