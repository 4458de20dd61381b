"""Stage 3, generation: the plan (sampling attribute combinations, one module per method), the prompts,
the LLM engine and endpoint, and the run that writes samples with full provenance."""
