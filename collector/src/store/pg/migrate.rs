//! Copying a SQLite store into PostgreSQL.
