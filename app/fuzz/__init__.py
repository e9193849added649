"""Seeded, bounded fuzzing of the web role's public edges (`support-agent fuzz`)."""
