"""The shared core's one exceptions module: one base, each refining a builtin."""

from __future__ import annotations


class ContractError(Exception):
    """Base class of every error ``core`` raises deliberately."""


class BundleError(ContractError, ValueError):
    """A bundle that cannot be used; the message names the key."""


class PolicyDocumentError(ContractError, ValueError):
    """A policy document (from a snapshot or cached facts) is malformed."""


class SettingError(ContractError, ValueError):
    """A remote setting is unknown, not a number or out of its bounds."""
