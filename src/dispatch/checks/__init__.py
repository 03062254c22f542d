"""Pre-send checks: rules over settings and one rendered message, DNS records, a spam score."""
