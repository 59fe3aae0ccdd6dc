"""Remote blob storage behind the origins: one ``Backend`` interface, several kinds."""

from kraken.backends.base import Backend, BackendError, BlobNotFound, make_backend

__all__ = ["Backend", "BackendError", "BlobNotFound", "make_backend"]
