"""The audit trail on the kiosk: the hash-chained journal and the uploader that empties it."""
