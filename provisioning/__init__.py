"""Admin tooling for kiosk fleets."""
