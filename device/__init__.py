"""Siheyi kiosk agent: credential sources, verifier, voice, gate, journal and uploader."""
