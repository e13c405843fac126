"""``micropython -m firmware_bridge.mcu --sam SPEC --host SPEC [--max-open-ms MS]``.

Also ``python -m firmware_bridge.mcu ...`` on CPython (pyserial ports). ``sys.argv[0]`` is
this file on CPython and the package name on MicroPython; the options follow on both.
"""

import sys

from .main import run_unix

sys.exit(run_unix(sys.argv[1:]))
