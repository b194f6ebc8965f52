"""The catalog: what we hold, who may see it, and what is still to do."""

from consult.catalog.db import Catalog, CatalogUnavailable, as_utc, insert_id, utcnow

__all__ = ["Catalog", "CatalogUnavailable", "as_utc", "insert_id", "utcnow"]
