"""The audit trail on the server: ingesting kiosk journals with chain and conflict checks."""
