"""The corpus of real public projects built through gg-infer (tests/test_corpus.py, bench/bench_corpus.py)."""
