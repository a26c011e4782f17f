"""Benchmarks run by ``statehub bench``: each module registers named workload groups."""
