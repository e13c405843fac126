"""The `kiosk` command line that fronts every Siheyi part."""

__version__ = "0.1.0"
