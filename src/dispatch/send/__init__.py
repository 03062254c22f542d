"""Sending: the planned campaign, who is skipped, the pre-flight, delivery through SMTP
connections, what relays reply, and OAuth2 logins."""
