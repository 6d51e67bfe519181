"""Fetching OCI images from registries into a verified content store.

Modules: `reference` (names), `digest`, `manifest` (strict parsing of untrusted documents),
`registry` (the distribution API over httpx), `auth`, `credentials`, `store` (the OCI layout
that holds only verified blobs) and `pipeline` (pull = all of the above, in order).

Nothing is re-exported here on purpose: `trust run` imports `pull.digest` and must not pay for
importing httpx.
"""

import sys as _sys

# httpx imports its optional command-line tool (click, pygments and rich's console, progress,
# syntax and table: ~70 ms) whenever click happens to be installed, and uvicorn brings click.
# A None entry makes that optional import fail the way httpx expects when click is absent.
_sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
