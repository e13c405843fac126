"""Credential sources: the ID-card reader (direct or behind an MCU), the QR camera and the
social-security card. Each runs its blocking I/O on its own thread and hands credentials to
the agent's event loop; none knows of HTTP or of decisions."""
