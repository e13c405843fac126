"""``python -m firmware_bridge VERB`` (also ``micropython -m firmware_bridge VERB``).

One function per verb in a dispatch table. ``sys.argv[0]`` is the path of this file on
CPython and the package name on MicroPython; the verb is ``sys.argv[1]`` on both.
"""

import sys


def _decode(args):
    from .decode import main

    return main(sys.stdin, sys.stdout)


VERBS = {
    "decode": (_decode, "read SAM reply frames as hex on stdin, print one JSON line each"),
}


def _usage():
    lines = ["usage: python -m firmware_bridge VERB", "verbs:"]
    for name in sorted(VERBS):
        lines.append(f"  {name}  {VERBS[name][1]}")
    sys.stderr.write("\n".join(lines) + "\n")


def run(argv):
    """Dispatch ``argv`` (without the program name); return the exit code."""
    if not argv or argv[0] not in VERBS:
        _usage()
        return 2
    return VERBS[argv[0]][0](argv[1:])


sys.exit(run(sys.argv[1:]))
