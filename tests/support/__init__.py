"""Test support shared by the integration tests.

- `support.registry`: start the real CNCF distribution registry (`docker-registry`) on loopback.
- `support.images`: build deterministic layers, images and indexes, and push them with plain httpx,
  independently of the product's own registry client.

The pytest fixtures that wrap these live in `tests/conftest.py`.
"""
