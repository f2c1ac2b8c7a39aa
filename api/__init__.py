"""The FastAPI service: the OpenAI-compatible fine-tuning API, steered generation, the dashboard."""
