//! The ShiftLens central collector: ingest, downtime timeline, competency join, reports and dashboard.
