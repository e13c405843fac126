"""Server storage: the connection, the versioned schema and its migrations."""
