"""The MCU firmware: ``main.Firmware`` and its entry points (see ``docs/firmware.md``)."""
