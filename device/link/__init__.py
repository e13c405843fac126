"""The kiosk's link to the server: the HTTP client, its circuit breaker, the kiosk's own key,
enrolment and key rotation. The only part of the agent that knows URLs."""
