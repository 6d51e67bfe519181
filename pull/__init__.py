"""Fetching OCI images from registries into a verified content store.

Modules: `reference` (names), `digest`, `manifest` (strict parsing of untrusted documents),
`registry` (the distribution API over httpx), `auth`, `credentials`, `store` (the OCI layout
that holds only verified blobs) and `pipeline` (pull = all of the above, in order).

Nothing is re-exported here on purpose: `trust run` imports `pull.digest` and must not pay for
importing httpx.
"""
