//! The ShiftLens edge agent: reads PLCs, keeps every event in a SQLite outbox and forwards it over MQTT.
