"""schemathesis hooks for scripts/api-schema.sh.

- The run never revokes or rotates the key it runs with: a request that would is pointed at
  a spare key instead (revoking its own key would turn the rest of the run into 401s).
- A campaign's Idempotency-Key that the schema allows is made unique: a short key drawn
  twice with two bodies is refused (422), as documented, which a valid request must not be.
- The stateful phase follows ids from one answer into the next request's path; a null one (a
  shared provider's `tenant_id`) would be sent as `/tenants/None`. It is sent as an id that
  names nothing instead: the document promises a 404 for that, and a 400 for what is sent.
"""

import os
import uuid

import schemathesis

# CPython 3.11 (Debian 12's Python) can fail to parse a large module once a parse has hit its
# recursion limit ("AST constructor recursion depth mismatch", CPython gh-106905). Hypothesis
# parses schemathesis's own source to describe a filter's lambda, only for display: there,
# such a failure gets the description Hypothesis gives a lambda it cannot find.
from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description

OWN_KEYS = set(filter(None, os.environ.get("HERALD_SCHEMA_OWN_KEYS", "").split(",")))
SPARE_KEY = os.environ.get("HERALD_SCHEMA_SPARE_KEY", "")


NOTHING = "00000000-0000-4000-8000-000000000000"


@schemathesis.hook
def before_call(context, case, **kwargs):
    params = case.path_parameters or {}
    for name, value in params.items():
        if value is None or value == "None":
            params[name] = NOTHING
    if case.path.startswith("/keys/") and params.get("id") in OWN_KEYS:
        params["id"] = SPARE_KEY
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if (
        case.method.upper() == "POST"
        and case.path == "/campaigns"
        and isinstance(key, str)
        and 1 <= len(key) <= 255
        and all(" " <= c <= "~" for c in key)
    ):
        headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4()}"
