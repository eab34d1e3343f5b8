"""Benchmarks: ``make bench`` runs each ``bench/bench_*.py`` module's ``run()``."""
