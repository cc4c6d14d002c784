"""hpsweep package."""
