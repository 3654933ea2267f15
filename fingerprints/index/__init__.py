"""In-memory similarity indexes: exact (numpy) and approximate (hnswlib), per feature and entity type."""
