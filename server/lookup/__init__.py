"""一键三查: a guard looks one person up by ID number or phone number (issue 12, part 5).

The answer is what the kiosk would decide at the guard's site (the same verifier and site
policy), the source records behind it (health code, the last NAT results, vaccination doses,
travel flags) and, for each failing reason, how the person gets back to a pass. Every lookup
is audited (``guard_lookups``, masked ID only) and rate limited per guard; phone numbers are
kept only as a keyed hash (:mod:`server.lookup.phones`). See docs/lookup.md.
"""
