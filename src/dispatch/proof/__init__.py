"""Proofs for sign-off: dry runs, the sign-off page, and pictures and PDFs made with Chromium."""
