"""Experiment configs (big_vision style): one Python file per experiment defining `get_config(arg)`."""
