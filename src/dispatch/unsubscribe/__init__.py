"""Unsubscribing: sealed tokens in every message, and the one-click endpoint that reads them."""
