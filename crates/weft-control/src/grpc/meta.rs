//! Small protobuf values the services share: durations, resource metadata, the match-all
//! HTTP route match and the protocol-detection timeout.

use linkerd2_proxy_api::http_route::{path_match, HttpRouteMatch, PathMatch};
use linkerd2_proxy_api::meta;
use std::time::Duration;

/// Protocol-detection timeout sent in inbound and outbound policies.
pub(crate) const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// `PathPrefix /`: matches every request.
pub(crate) fn match_all() -> HttpRouteMatch {
    HttpRouteMatch {
        path: Some(PathMatch {
            kind: Some(path_match::Kind::Prefix("/".into())),
        }),
        ..Default::default()
    }
}

pub(crate) fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

pub(crate) fn service_meta(namespace: &str, name: &str, port: u16) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".into(),
            kind: "Service".into(),
            name: name.into(),
            namespace: namespace.into(),
            section: String::new(),
            port: port.into(),
        })),
    }
}

pub(crate) fn default_meta(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.into())),
    }
}
