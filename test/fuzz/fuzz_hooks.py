"""Schemathesis hooks for the fuzz run (test/fuzz/test_openapi_fuzz.py loads them with SCHEMATHESIS_HOOKS).

Three built-in checks run wrapped (WRAPPED), never loosened beyond what is named here:

- `positive_data_acceptance`: a request the document calls valid is accepted, except for a 422 about
  the *content* of an uploaded or base64 file (random bytes are not audio, nor an .ecdc; no schema
  can say "a decodable audio file") or a trim past the end of that audio, and a 422 from a rule
  between query parameters (OpenAPI describes each parameter on its own), or between a job-audio
  query and the options the job was made with.
- `not_a_server_error`: no 5xx; `status_code_conformance`: every status is documented.

Nothing else is let through: the hostile-input classes of issue 16 (bodies that are not UTF-8, lone
surrogates, form and query strings) are fixed, and a failure of theirs fails the run.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import schemathesis
from schemathesis.checks import not_a_server_error as _not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance as _positive_data_acceptance
from schemathesis.specs.openapi.checks import status_code_conformance as _status_code_conformance

# The fields that carry a file or trim it. An error about one of them with a code of its own (not_ecdc,
# invalid_audio, ...) is about the file's content; invalid_field (such as "not valid base64") is about
# the field's form, which the document states.
CONTENT_FIELDS = {"file", "audio", "melody", "melody_start", "melody_end"}
CROSS_PARAMETER_RULES = {"bit_depth", "sample_rate", "bandwidth_kbps"}

def _error(response) -> dict:
    try:
        body = response.json()
    except Exception:
        return {}
    return body.get("error", {}) if isinstance(body, dict) else {}


def _about_content(response) -> bool:
    error = _error(response)
    return response.status_code == 422 and error.get("field") in CONTENT_FIELDS and error.get("code") != "invalid_field"


def _across_query_parameters(response) -> bool:
    """A 422 from a rule between query parameters (flac and 32-bit, mp3 and its rates, a codec and its
    bandwidths): OpenAPI describes each parameter on its own. The body schemas state these rules; the
    parameters state each value that some combination takes."""
    error = _error(response)
    url = urlsplit(response.request.url)
    query = dict(parse_qsl(url.query))
    # GET /api/jobs/{id}/audio converts the job's own audio: its parameters combine with the options
    # the job was made with (format=mp3 on a job made at 9258 Hz), which are state, not request.
    combined = url.path.endswith("/audio")
    field = error.get("field")
    return response.status_code == 422 and field in CROSS_PARAMETER_RULES and (field in query or combined)


def _wrap(builtin, *exempt):
    def check(ctx, response, case):
        try:
            return builtin(ctx, response, case)
        except Exception:
            if any(e(response) for e in exempt):
                return None
            raise

    return check


# The wrapped checks, by the names the run reports (fuzz run: --exclude-checks the built-ins).
WRAPPED = {
    "positive_data_acceptance": (_positive_data_acceptance, _about_content, _across_query_parameters),
    "not_a_server_error": (_not_a_server_error,),
    "status_code_conformance": (_status_code_conformance,),
}
for _name, (_builtin, *_exempt) in WRAPPED.items():
    _check = _wrap(_builtin, *_exempt)
    _check.__name__ = f"{_name}_but_named"
    _check.__doc__ = f"{_name}, less what fuzz_hooks names."
    schemathesis.check(_check)
