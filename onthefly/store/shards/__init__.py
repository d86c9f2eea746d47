"""Parquet shards of per-sample rows and step metrics: the writer, its files and its Arrow helpers."""
