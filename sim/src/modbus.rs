//! Modbus TCP server exposing the plant.
