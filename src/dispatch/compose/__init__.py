"""Turning an issue into messages: the template context and sandbox, rendering and CSS inlining,
pictures and attachments, MIME messages and their DKIM signatures."""
