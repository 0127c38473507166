"""Helpers the tests share: peers, instances, files, the CLI; no fixtures (those live in conftest.py files)."""
