"""The FastAPI service: the OpenAI-compatible fine-tuning API (files, jobs, adapters, methods),
steered generation, tenants and API keys, the dashboard and Prometheus metrics."""
