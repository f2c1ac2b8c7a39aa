"""Data files the core ships: the strength report's neutral prompts."""
