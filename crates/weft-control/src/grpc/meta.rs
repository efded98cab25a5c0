//! Small protobuf values the services share: durations and resource metadata.

use linkerd2_proxy_api::meta;
use std::time::Duration;

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
