"""Quota, rate, cooldown and concurrency state."""
