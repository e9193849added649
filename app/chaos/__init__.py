"""The chaos harness: web and two workers as separate processes on one Redis, faults injected at
seeded random moments mid-turn, and what the agent said compared character by character with
what Slack finally shows. `support-agent chaos takeover|drop|redis`; see `cli.py`."""
