"""Sending: where requests go, how fast, how often again, over which transport, in which API.

The request travels endpoint → pool (concurrency, rate limit, retry) → transport → provider
adapter and comes back as a ``Sample``; nothing here reads what the outputs say.
"""
