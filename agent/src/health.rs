//! Agent health: buffer depth, oldest unsent age, drops and per-source state, published as status.
