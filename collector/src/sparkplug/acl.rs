//! What the embedded broker's gate lets an authenticated gateway do with Sparkplug topics: a pure policy,
//! table-tested. A gateway is the edge node whose id is its gateway id; when its identity is bound to a site,
//! only in the group of that name.
//!
//! - publish (and set as last will): its own edge node's NBIRTH, NDEATH, NDATA, DBIRTH, DDEATH, DDATA;
//! - subscribe: its own NCMD and DCMD (`.../NCMD/{node}`, `.../NCMD/{node}/#`, `.../DCMD/{node}/#|+|{device}`)
//!   and any host's `spBv1.0/STATE/{host}` (or `spBv1.0/STATE/+`).
//!
//! Feed readers get none of this.

use shiftlens_common::sparkplug::{self as sp, SpTopic, NAMESPACE};
use shiftlens_common::{GatewayId, SiteId};

fn group_ok(group: &str, site: Option<&SiteId>) -> bool {
    sp::check_id(group).is_ok() && site.is_none_or(|s| s.as_str() == group)
}

/// Whether `gateway` (of `site`, when bound to one) may publish on `topic`.
pub fn edge_may_publish(topic: &str, gateway: &GatewayId, site: Option<&SiteId>) -> bool {
    match SpTopic::parse(topic) {
        Ok(SpTopic::Message { group, kind, node, .. }) => {
            kind.from_edge() && node == gateway.as_str() && group_ok(&group, site)
        }
        _ => false,
    }
}

/// Whether `gateway` (of `site`, when bound to one) may subscribe to `filter`.
pub fn edge_may_subscribe(filter: &str, gateway: &GatewayId, site: Option<&SiteId>) -> bool {
    let parts: Vec<&str> = filter.split('/').collect();
    match parts.as_slice() {
        [NAMESPACE, "STATE", host] => *host == "+" || sp::check_id(host).is_ok(),
        [NAMESPACE, group, kind @ ("NCMD" | "DCMD"), node, rest @ ..] => {
            *node == gateway.as_str()
                && group_ok(group, site)
                && match (*kind, rest) {
                    (_, [] | ["#"]) => true,
                    ("DCMD", ["+"]) => true,
                    ("DCMD", [device]) => sp::check_id(device).is_ok(),
                    _ => false,
                }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_publishes_only_its_own_edge_node_in_its_own_site() {
        let gw = GatewayId::parse("gw-1").unwrap();
        let site = SiteId::parse("plant-a").unwrap();
        let s = Some(&site);
        for (topic, bound, unbound) in [
            ("spBv1.0/plant-a/NBIRTH/gw-1", true, true),
            ("spBv1.0/plant-a/DDATA/gw-1/press", true, true),
            ("spBv1.0/plant-a/NDEATH/gw-1", true, true),
            ("spBv1.0/plant-b/NDATA/gw-1", false, true),
            ("spBv1.0/plant-a/NDATA/gw-2", false, false),
            ("spBv1.0/plant-a/NCMD/gw-1", false, false),
            ("spBv1.0/plant-a/DCMD/gw-1/press", false, false),
            ("spBv1.0/STATE/gw-1", false, false),
            ("spBv1.0/plant-a/NDATA/+", false, false),
            ("shiftlens/v1/plant-a/gw-1/events", false, false),
        ] {
            assert_eq!(edge_may_publish(topic, &gw, s), bound, "{topic} bound");
            assert_eq!(edge_may_publish(topic, &gw, None), unbound, "{topic} unbound");
        }
    }

    #[test]
    fn a_gateway_subscribes_only_to_its_own_commands_and_host_states() {
        let gw = GatewayId::parse("gw-1").unwrap();
        let site = SiteId::parse("plant-a").unwrap();
        for (filter, ok) in [
            ("spBv1.0/plant-a/NCMD/gw-1", true),
            ("spBv1.0/plant-a/NCMD/gw-1/#", true),
            ("spBv1.0/plant-a/DCMD/gw-1/#", true),
            ("spBv1.0/plant-a/DCMD/gw-1/+", true),
            ("spBv1.0/plant-a/DCMD/gw-1/press", true),
            ("spBv1.0/STATE/scada", true),
            ("spBv1.0/STATE/+", true),
            ("spBv1.0/plant-a/NCMD/gw-2", false),
            ("spBv1.0/plant-b/NCMD/gw-1", false),
            ("spBv1.0/plant-a/NCMD/+", false),
            ("spBv1.0/plant-a/NDATA/gw-1", false),
            ("spBv1.0/plant-a/#", false),
            ("spBv1.0/#", false),
            ("#", false),
        ] {
            assert_eq!(edge_may_subscribe(filter, &gw, Some(&site)), ok, "{filter}");
        }
    }
}
