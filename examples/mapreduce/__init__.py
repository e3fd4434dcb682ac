"""Parallel map, then reduce: word counts over many text chunks (see wordcount.py)."""
