"""Code that runs unchanged under MicroPython on a microcontroller and under CPython on the Pi."""
