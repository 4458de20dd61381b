"""The LLM layer: the async engine (cache, budget, retries, adaptive concurrency) and the endpoint."""
