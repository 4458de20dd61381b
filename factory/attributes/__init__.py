"""Stage 2, attributes: given and elicited values per dimension and class, similar classes, class-agnostic
filtering, the lock file, and lenient parsing of the LLM's lists."""
