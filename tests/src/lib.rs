//! End-to-end tests: helpers that start the real programs together.
