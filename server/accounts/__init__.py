"""People who use the server: administrators, site guards and auditors (issue 12)."""
