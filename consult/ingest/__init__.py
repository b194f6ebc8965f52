"""Ingest: a received dataset validated, stored byte-exact and indexed, its preview queued
(``pipeline``; the index transaction is ``indexing``)."""
