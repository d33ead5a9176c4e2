"""Shared test configuration for the core's tests."""

pytest_plugins = ["pytester"]
