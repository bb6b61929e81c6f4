"""Experiment launcher, data loaders, tasks and configs (issues 3 and 5; not built yet)."""
