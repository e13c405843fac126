"""Deciding a tap: the verifier with its deadline, the offline cache and its fallback through
the shared policy, clock trust, signed passes and site snapshots."""
