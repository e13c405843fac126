"""What a kiosk takes offline: signed site snapshots, signed passes, and the keys behind them."""
