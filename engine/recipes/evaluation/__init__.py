"""Metrics and the ``barforge eval`` command."""
