"""The contract the kiosk and the server share, in one copy: pure code, no I/O.

Both ``device`` and ``server`` import it; it imports neither (nor anything but the standard
library, ``msgspec`` and ``cryptography``), so the kiosk image can carry it without the server.
"""
