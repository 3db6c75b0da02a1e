//! OPC UA server exposing the plant.
