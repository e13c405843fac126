"""Software updates on the kiosk (docs/updates.md).

The server offers a release in the heartbeat answer; :mod:`device.update.updater` downloads
it, checks its size, hash and release-key signature (:mod:`.download`), installs it into a
fresh venv beside the running one (:mod:`.install`), switches the ``current`` link and exits
for systemd to start the new agent, only when no tap is in flight. The new agent proves
itself with a self-test tap (:mod:`.selftest`) and commits, or switches back. Before every
start the boot guard (:mod:`.bootguard`, stdlib only) rolls back a trial that does not work,
so a power cut at any step boots a working release.
"""
