"""Zero-shot trainability scores and search-space pruning (issue 4; not built yet)."""
