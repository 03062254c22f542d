"""Subscriber lists: streamed CSV files read into validated, de-duplicated recipients."""
