"""Siheyi central service: four-in-one verify, audit ingestion, device registry."""
