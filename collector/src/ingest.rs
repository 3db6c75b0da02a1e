//! Ingest: subscribe, decode, validate, hand to the store, ack after commit.
