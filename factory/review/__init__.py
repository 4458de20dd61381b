"""``factory review SPEC``: a local page to review samples and attribute values before training."""
