"""Readers of the standard on-disk dataset layouts, and device-resident batching."""
