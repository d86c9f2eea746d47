"""The session catalog: SQLite tables, their ORM models and migrations, Arrow views of them."""
