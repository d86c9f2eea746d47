"""Reading a session: DuckDB views, reports, exports and the data operations handles offer."""
