"""Data, not code: the domain catalogue, tiers, provider prices and budgets as YAML.

A package only so the YAML files ship inside the wheel; ``runtime.load_catalog`` reads them.
"""
