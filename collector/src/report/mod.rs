//! Reports: pure functions from plain data to report rows.
