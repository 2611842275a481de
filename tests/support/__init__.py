"""Helpers shared by the engine, agent and interop tests."""
