"""Voice packs for the fleet (issue 16; core/voicepack.py, docs/voice-packs.md).

Admins publish a pack (a zip of clips and words) signed with the fleet's offline release key
(``kiosk voice pack publish``); the server checks and stores it (:mod:`~server.voicepacks.store`)
and a kiosk whose merged configuration names it (``voice.pack``, fleet < site < device)
downloads it with its session (:mod:`~server.voicepacks.views`). The server cannot make a
pack kiosks accept: it holds no key, it only passes the admin's signature on.

Wiring (server/app.py): :data:`server.voicepacks.views.OPERATIONS`. The signature is checked
at upload with ``[releases] release_key`` when it is set (the same key kiosks pin).
"""
