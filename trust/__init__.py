"""trust: verified pulls, signatures, policy admission and a namespaced runtime for OCI images."""

__version__ = "0.1.0"
"""The package version (pyproject.toml reads it from here); part of every reusable decision record."""
