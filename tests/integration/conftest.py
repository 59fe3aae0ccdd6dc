"""Fixtures shared by several integration modules."""

from tests.integration.dev_cluster import dev_cluster

__all__ = ["dev_cluster"]
