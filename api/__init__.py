"""FastAPI service (OpenAI-compatible fine-tuning API). Built under issue 4; empty so far."""
