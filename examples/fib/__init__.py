"""gg's classic recursive fibonacci, written with the Python SDK (see fib.py)."""
