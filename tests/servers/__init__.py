"""Launchers for real OpenStack servers used by contract tests (run on 127.0.0.1 only)."""
