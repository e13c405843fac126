"""Four-in-one verify and its four sources: local tables, HTTP upstreams with last-known
values, QR token resolution, and the import of source data."""
