//! A simulated plant for tests, benchmarks, commissioning practice and the demo.
