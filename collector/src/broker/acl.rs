//! The broker's access policy: who a client is and what it may do. Pure (no I/O), table-tested; the gate
//! ([`super::gate`]) asks [`allows`] for every CONNECT's last will, PUBLISH and SUBSCRIBE.
//!
//! Identity: with TLS, the certificate's subject CN is the gateway id and its site a SAN URI
//! `urn:shiftlens:site:{site}` or else the subject OU ([`cert_identity`]); in plaintext the client id,
//! `{site}.{gateway}` (that site only) or `{gateway}` (any site) ([`client_id_identity`]).
//!
//! Policy ([`allows`]):
//! - a gateway may publish only `shiftlens/v1/{site}/{gateway}/events|status` of its own site and gateway,
//!   set only its own status topic as last will, and subscribe only to its own `.../ack`;
//! - a feed reader may only subscribe to the downtime feed (`shiftlens/v1/+/downtime` or one site's),
//!   never publish nor set a last will.

use shiftlens_common::{topic, GatewayId, SiteId, Topic};

/// Prefix of the SAN URI that names a gateway certificate's site.
pub const SITE_URI: &str = "urn:shiftlens:site:";

/// Who a client is: its gateway id (or feed reader name) and, when bound to one, its site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: GatewayId,
    pub site: Option<SiteId>,
}

impl Identity {
    /// The client id towards rumqttd, which keys sessions by it: one namespace per site, and none that a
    /// gateway, a feed reader or the collector could share (`:` and `.` are not allowed in ids).
    pub fn upstream_client_id(&self, reader: bool) -> String {
        match (&self.site, reader) {
            (_, true) => format!("feed:{}", self.id),
            (Some(site), false) => format!("{site}.{}", self.id),
            (None, false) => format!(".{}", self.id),
        }
    }

    pub fn owns(&self, site: &SiteId, gateway: &GatewayId) -> bool {
        &self.id == gateway && self.site.as_ref().is_none_or(|s| s == site)
    }
}

/// The identity a client certificate names: the subject CN is the gateway id; the site is a SAN URI
/// `urn:shiftlens:site:{site}` or else the (single) subject OU, or `legacy` when it names none.
pub fn cert_identity(der: &[u8], legacy: Option<&SiteId>) -> Result<Identity, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable client certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("client certificate has no subject CN")?;
    let id = GatewayId::parse(cn).map_err(|e| format!("client certificate CN is not a gateway id: {e}"))?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = name {
                uris.extend(u.strip_prefix(SITE_URI));
            }
        }
    }
    let ous: Vec<&str> = cert.subject().iter_organizational_unit().filter_map(|a| a.as_str().ok()).collect();
    let named = match (uris.as_slice(), ous.as_slice()) {
        ([site], _) | ([], [site]) => Some(*site),
        ([], []) => None,
        ([], _) => {
            return Err(format!(
                "client certificate {cn} has several subject OUs: name its site with a SAN URI {SITE_URI}<site>"
            ))
        }
        _ => return Err(format!("client certificate {cn} has several SAN URIs {SITE_URI}...")),
    };
    let site = match named {
        Some(s) => {
            Some(SiteId::parse(s).map_err(|e| format!("client certificate {cn}: site {s:?} is not a site id: {e}"))?)
        }
        None => legacy.cloned(),
    };
    Ok(Identity { id, site })
}

/// How a plaintext client id names its identity: `{site}.{gateway}` or `{gateway}` (any site).
pub fn client_id_identity(client_id: &str) -> Result<Identity, String> {
    let err = |e: shiftlens_common::IdError| format!("client id {client_id:?}: {e}");
    match client_id.split_once('.') {
        Some((site, id)) => {
            Ok(Identity { id: GatewayId::parse(id).map_err(err)?, site: Some(SiteId::parse(site).map_err(err)?) })
        }
        None => Ok(Identity { id: GatewayId::parse(client_id).map_err(err)?, site: None }),
    }
}

/// Whether `topic` is one `who` may publish on: its own status, and with `allow_events` its own events.
fn own_topic(topic: &str, who: &Identity, allow_events: bool) -> bool {
    match Topic::parse(topic) {
        Ok(Topic::Events { site, gateway }) => allow_events && who.owns(&site, &gateway),
        Ok(Topic::Status { site, gateway }) => who.owns(&site, &gateway),
        _ => false,
    }
}

/// What a client is in the broker's eyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A gateway: publishes its own events and status, reads its own acks.
    Gateway,
    /// A feed reader (`[broker] feed_readers`, central IT): only reads the downtime feed.
    FeedReader,
}

/// What a client asks to do, with the topic (or, for a subscription, the filter) it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// The last will in its CONNECT.
    LastWill(&'a str),
    Publish(&'a str),
    Subscribe(&'a str),
}

/// The access policy: whether `who`, acting as `role`, may make `request`.
pub fn allows(who: &Identity, role: Role, request: Request<'_>) -> bool {
    match (role, request) {
        (Role::Gateway, Request::LastWill(t)) => own_topic(t, who, false),
        (Role::Gateway, Request::Publish(t)) => own_topic(t, who, true),
        (Role::Gateway, Request::Subscribe(f)) => {
            matches!(Topic::parse(f), Ok(Topic::Ack { site, gateway }) if who.owns(&site, &gateway))
        }
        (Role::FeedReader, Request::Subscribe(f)) => {
            matches!(Topic::parse(f), Ok(Topic::Downtime { .. })) || f == topic::ALL_DOWNTIME
        }
        (Role::FeedReader, Request::LastWill(_) | Request::Publish(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Request::{LastWill, Publish, Subscribe};
    use Role::{FeedReader, Gateway};

    fn cert(cn: &str, ous: &[&str], uris: &[&str]) -> Vec<u8> {
        let sans = uris.iter().map(|u| rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*u).unwrap())).collect();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for ou in ous {
            params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, *ou);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn who(id: &str, site: Option<&str>) -> Identity {
        Identity { id: GatewayId::parse(id).unwrap(), site: site.map(|s| SiteId::parse(s).unwrap()) }
    }

    #[test]
    fn a_certificate_names_its_site_by_san_uri_or_ou() {
        let legacy = SiteId::parse("old").unwrap();
        // (subject OUs, SAN URIs, legacy_site, the site or a part of the error)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], Option<&'a SiteId>, Result<Option<&'a str>, &'a str>);
        let cases: [Case; 7] = [
            (&["plant-a"], &[], None, Ok(Some("plant-a"))),
            (&[], &["urn:shiftlens:site:plant-b"], None, Ok(Some("plant-b"))),
            // The URI wins over an OU that is something else (a department).
            (&["Maintenance"], &["urn:shiftlens:site:plant-b"], None, Ok(Some("plant-b"))),
            (&[], &["https://example.com/x"], None, Ok(None)),
            (&[], &[], Some(&legacy), Ok(Some("old"))),
            (&["Plant A"], &[], None, Err("is not a site id")),
            (&[], &["urn:shiftlens:site:a", "urn:shiftlens:site:b"], None, Err("several SAN URIs")),
        ];
        for (ous, uris, legacy, want) in cases {
            let got = cert_identity(&cert("gw-1", ous, uris), legacy);
            match (got, want) {
                (Ok(i), Ok(site)) => assert_eq!(i, who("gw-1", site), "{ous:?} {uris:?}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{ous:?} {uris:?}: {e}"),
                (got, want) => panic!("{ous:?} {uris:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn gateways_reach_only_their_own_topics_and_feed_readers_only_the_feed() {
        let (a, any, b) = (who("gw-1", Some("a")), who("gw-1", None), who("gw-2", Some("a")));
        // (identity, role, request, allowed)
        let cases: &[(&Identity, Role, Request, bool)] = &[
            (&a, Gateway, Publish("shiftlens/v1/a/gw-1/events"), true),
            (&a, Gateway, Publish("shiftlens/v1/a/gw-1/status"), true),
            (&a, Gateway, Publish("shiftlens/v1/b/gw-1/events"), false),
            (&a, Gateway, Publish("shiftlens/v1/a/gw-2/events"), false),
            (&a, Gateway, Publish("shiftlens/v1/a/gw-1/ack"), false),
            (&a, Gateway, Publish("shiftlens/v1/a/downtime"), false),
            (&a, Gateway, Publish("shiftlens/v1/+/gw-1/events"), false),
            (&a, Gateway, Publish("other/topic"), false),
            (&any, Gateway, Publish("shiftlens/v1/b/gw-1/events"), true),
            (&a, Gateway, LastWill("shiftlens/v1/a/gw-1/status"), true),
            (&a, Gateway, LastWill("shiftlens/v1/a/gw-1/events"), false),
            (&b, Gateway, LastWill("shiftlens/v1/a/gw-1/status"), false),
            (&a, Gateway, Subscribe("shiftlens/v1/a/gw-1/ack"), true),
            (&a, Gateway, Subscribe("shiftlens/v1/a/gw-2/ack"), false),
            (&a, Gateway, Subscribe("shiftlens/v1/b/gw-1/ack"), false),
            (&a, Gateway, Subscribe("shiftlens/v1/+/gw-1/ack"), false),
            (&a, Gateway, Subscribe("shiftlens/v1/a/downtime"), false),
            (&a, Gateway, Subscribe("#"), false),
            (&a, FeedReader, Subscribe("shiftlens/v1/a/downtime"), true),
            (&a, FeedReader, Subscribe(topic::ALL_DOWNTIME), true),
            (&a, FeedReader, Subscribe("shiftlens/v1/#"), false),
            (&a, FeedReader, Subscribe("shiftlens/v1/a/gw-1/ack"), false),
            (&a, FeedReader, Subscribe(topic::ALL_EVENTS), false),
            (&a, FeedReader, Publish("shiftlens/v1/a/downtime"), false),
            (&a, FeedReader, Publish("shiftlens/v1/a/gw-1/events"), false),
            (&a, FeedReader, LastWill("shiftlens/v1/a/gw-1/status"), false),
        ];
        for &(who, role, request, want) in cases {
            assert_eq!(allows(who, role, request), want, "{who:?} as {role:?}: {request:?}");
        }
    }

    #[test]
    fn topics_and_client_ids_belong_to_one_site_and_gateway() {
        let a = who("gw-1", Some("a"));
        assert!(own_topic("shiftlens/v1/a/gw-1/events", &a, true));
        assert!(!own_topic("shiftlens/v1/b/gw-1/events", &a, true));
        assert!(!own_topic("shiftlens/v1/a/gw-2/status", &a, true));
        assert!(!own_topic("shiftlens/v1/a/gw-1/events", &a, false));
        let any = who("gw-1", None);
        assert!(own_topic("shiftlens/v1/b/gw-1/status", &any, false));
        assert_eq!(client_id_identity("a.gw-1").unwrap(), a);
        assert_eq!(client_id_identity("gw-1").unwrap(), any);
        assert!(client_id_identity("a.b.gw-1").is_err());
        let ids = [a.upstream_client_id(false), who("gw-1", Some("b")).upstream_client_id(false)];
        assert_eq!(ids, ["a.gw-1", "b.gw-1"]);
        assert_ne!(any.upstream_client_id(false), any.upstream_client_id(true));
    }
}
