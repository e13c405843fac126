"""The HTTP surface: handlers, authentication, JSON errors, overload protection and TLS."""
