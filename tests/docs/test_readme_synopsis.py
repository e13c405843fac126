"""The README's "Command line" block shows what the verbs take (issue 14, part 1): every
option of ``kiosk provision status``, ``add --serial`` without a required ``--bundle``, and
every KIND ``kiosk server import`` accepts.

The options every provision verb shares (where the fleet is: ``--database``, ``--config``,
``--server-url``, ``--admin``, ``--password-file``, ``--tls-ca``) are said once in the block's
comment, so they are not asked for on each line.
"""

from __future__ import annotations

from server.verify.importer import KINDS
from tests.docs.test_readme_commands import LINES, command_block, subparser, visible_options

SHARED = {"--database", "--config", "--server-url", "--admin", "--password-file", "--tls-ca"}


def test_provision_status_shows_every_option() -> None:
    shown = set().union(*(ln.options for ln in LINES if ("provision", "status") in ln.verbs))
    options = {o for o in visible_options(subparser(("provision", "status"))) if o[:2] == "--"}
    assert sorted(options - SHARED - {"--help"} - shown) == []


def test_add_serial_does_not_require_a_bundle() -> None:
    line = next(ln for ln in LINES if "--serial S " in ln.text and ("provision", "add") in ln.verbs)
    assert "[--bundle FILE" in line.text, line.text


def test_every_import_kind_is_listed() -> None:
    block = command_block()
    comment = block[block.index("kiosk server import") :].split("kiosk server issue-pass")[0]
    assert sorted(k for k in KINDS if k not in comment) == []
