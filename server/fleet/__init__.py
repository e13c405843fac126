"""Fleet and identity: the device registry, kiosk keys and sessions, and administrators."""
