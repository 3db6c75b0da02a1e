//! The topic scheme, built and parsed here only.
//!
//! ```text
//! shiftlens/v1/{site}/{gateway}/events   QoS 1, CBOR batches from the agent
//! shiftlens/v1/{site}/{gateway}/status   JSON, retained birth, heartbeat, last will
//! shiftlens/v1/{site}/{gateway}/ack      CBOR acks from the collector
//! shiftlens/v1/{site}/downtime           JSON downtime feed for central IT
//! ```

use crate::ids::{GatewayId, SiteId};
use std::fmt;

pub const PREFIX: &str = "shiftlens/v1";

/// A parsed ShiftLens topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Events { site: SiteId, gateway: GatewayId },
    Status { site: SiteId, gateway: GatewayId },
    Ack { site: SiteId, gateway: GatewayId },
    Downtime { site: SiteId },
}

/// Why a topic is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic {topic:?} is not a ShiftLens topic: {why}")]
pub struct TopicError {
    pub topic: String,
    pub why: String,
}

/// Subscription filter for every gateway's event batches.
pub const ALL_EVENTS: &str = "shiftlens/v1/+/+/events";
/// Subscription filter for every gateway's status.
pub const ALL_STATUS: &str = "shiftlens/v1/+/+/status";
/// Subscription filter for every site's downtime feed.
pub const ALL_DOWNTIME: &str = "shiftlens/v1/+/downtime";

/// Subscription filter for the event batches of every gateway of one site.
pub fn site_events(site: &SiteId) -> String {
    format!("{PREFIX}/{site}/+/events")
}

/// Subscription filter for the status of every gateway of one site.
pub fn site_status(site: &SiteId) -> String {
    format!("{PREFIX}/{site}/+/status")
}

/// A shared subscription (MQTT 5 and Mosquitto): each message of `filter` goes to one member of `group`.
pub fn shared(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
}

impl Topic {
    /// Parses a topic name (not a filter).
    ///
    /// # Errors
    /// When the prefix, the number of levels, the kind or an id is wrong.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let err = |why: String| TopicError { topic: topic.chars().take(200).collect(), why };
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| err(format!("it does not start with {PREFIX}/")))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let site = |s: &str| SiteId::parse(s).map_err(|e| err(e.to_string()));
        let gw = |s: &str| GatewayId::parse(s).map_err(|e| err(e.to_string()));
        match parts.as_slice() {
            [s, "downtime"] => Ok(Topic::Downtime { site: site(s)? }),
            [s, g, "events"] => Ok(Topic::Events { site: site(s)?, gateway: gw(g)? }),
            [s, g, "status"] => Ok(Topic::Status { site: site(s)?, gateway: gw(g)? }),
            [s, g, "ack"] => Ok(Topic::Ack { site: site(s)?, gateway: gw(g)? }),
            _ => Err(err("expected {site}/{gateway}/events|status|ack or {site}/downtime".into())),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Events { site, gateway } => write!(f, "{PREFIX}/{site}/{gateway}/events"),
            Topic::Status { site, gateway } => write!(f, "{PREFIX}/{site}/{gateway}/status"),
            Topic::Ack { site, gateway } => write!(f, "{PREFIX}/{site}/{gateway}/ack"),
            Topic::Downtime { site } => write!(f, "{PREFIX}/{site}/downtime"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (SiteId, GatewayId) {
        (SiteId::parse("plant-a").unwrap(), GatewayId::parse("gw_1").unwrap())
    }

    #[test]
    fn topics_round_trip() {
        let (site, gateway) = ids();
        for t in [
            Topic::Events { site: site.clone(), gateway: gateway.clone() },
            Topic::Status { site: site.clone(), gateway: gateway.clone() },
            Topic::Ack { site: site.clone(), gateway: gateway.clone() },
            Topic::Downtime { site: site.clone() },
        ] {
            assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
        }
        assert_eq!(Topic::Events { site, gateway }.to_string(), "shiftlens/v1/plant-a/gw_1/events");
    }

    #[test]
    fn filters_are_built_here() {
        let (site, _) = ids();
        assert_eq!(site_events(&site), "shiftlens/v1/plant-a/+/events");
        assert_eq!(site_status(&site), "shiftlens/v1/plant-a/+/status");
        assert_eq!(shared("g", ALL_EVENTS), "$share/g/shiftlens/v1/+/+/events");
        assert_eq!(ALL_DOWNTIME, format!("{PREFIX}/+/downtime"));
    }

    #[test]
    fn topics_with_wildcards_extra_levels_or_bad_ids_are_refused() {
        for bad in [
            "shiftlens/v1/+/gw/events",
            "shiftlens/v1/site/#",
            "shiftlens/v1/site/gw/events/extra",
            "shiftlens/v2/site/gw/events",
            "shiftlens/v1/Site/gw/events",
            "shiftlens/v1/site/gw/other",
            "shiftlens/v1//gw/events",
            "other/v1/site/gw/events",
            "",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
