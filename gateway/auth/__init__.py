"""Client API keys, the admin credential, and per-key limits.

``keys``: making, hashing and recognising keys; ``middleware``: who may call
which path; ``limits``: requests and tokens per minute and cloud spend per day.
"""
