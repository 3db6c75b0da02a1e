//! A simulated plant for tests, benchmarks, commissioning practice and the demo.
//!
//! [`plant::Plant`] holds every asset's points; the Modbus server (`modbus`) and the OPC UA server
//! (`opcua`, with Alarms & Conditions from `alarms`) expose the same plant over their protocols, and `scenario`
//! changes it over time.

pub mod alarms;
pub mod modbus;
pub mod opcua;
pub mod plant;
pub mod scenario;
