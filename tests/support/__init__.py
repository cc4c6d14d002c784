"""Test support shared by the tests and the benchmarks (which import it, never conftest)."""
