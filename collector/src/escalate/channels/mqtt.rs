//! The MQTT channel: the [`Message`](super::Message) as JSON on `shiftlens/v1/{site}/escalations`, published
//! through the collector's own broker connection (QoS 1 with an external broker), for plants that route
//! alerts through their own systems. Feed readers (`[broker] feed_readers`) may subscribe to it.

use crate::ingest::Uplink as Publisher;
use shiftlens_common::{SiteId, Topic};

/// Publishes `body` for `site`.
///
/// # Errors
/// A bad site id or a publish the broker connection refused.
pub async fn publish(p: &Publisher, site: &str, body: Vec<u8>) -> Result<(), String> {
    let site = SiteId::parse(site.to_string()).map_err(|e| e.to_string())?;
    p.publish(Topic::Escalations { site }.to_string(), body).await
}
