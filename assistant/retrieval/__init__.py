"""Documents on disk: ingest (read, chunk, hash), index (SQLite FTS5 + vectors), search (rank, cite)."""
