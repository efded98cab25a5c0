//! `WEFT_PROXY_IDENTITY_*`: whether identity is on, and its settings, all checked at start.

use std::{path::PathBuf, time::Duration};

use super::{
    parse::{is_dns_name, parse_addr_list, parse_duration, parse_identity_name},
    Env, VarError, DEFAULT_IDENTITY_MAX_REFRESH, DEFAULT_IDENTITY_MIN_REFRESH,
    ENV_IDENTITY_LOCAL_NAME, ENV_IDENTITY_MAX_REFRESH, ENV_IDENTITY_MIN_REFRESH,
    ENV_IDENTITY_SVC_ADDR, ENV_IDENTITY_SVC_NAME, ENV_IDENTITY_TOKEN_FILE,
    ENV_IDENTITY_TRUST_ANCHORS, ENV_IDENTITY_TRUST_ANCHORS_FILE,
};

/// Identity settings (`WEFT_PROXY_IDENTITY_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `host:port` list of `Identity.Certify`.
    pub svc_addr: String,
    /// The identity its server must prove (`WEFT_PROXY_IDENTITY_SVC_NAME`); `None` = plaintext
    /// (loopback only).
    pub svc_name: Option<String>,
    /// PEM trust anchors (validated: at least one certificate).
    pub trust_anchors_pem: String,
    /// Where `trust_anchors_pem` came from, when it is a file: followed for changes.
    pub trust_anchors_file: Option<PathBuf>,
    pub token_file: PathBuf,
    /// The DNS-like identity this proxy asks for and serves.
    pub local_name: String,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
}

impl IdentityConfig {
    /// `Ok(None)` when no identity variable is set; otherwise the token file, the local name and
    /// the trust anchors are all required. Errors list every bad variable.
    pub fn from_env(
        env: &dyn Env,
        destination_addr: &str,
        destination_name: &Option<String>,
    ) -> Result<Option<IdentityConfig>, Vec<VarError>> {
        let get = |name: &str| {
            env.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut errors = Vec::new();
        let mut fail = |name: &'static str, reason: &str, value: Option<String>| {
            errors.push(VarError {
                name,
                reason: reason.to_string(),
                value,
            })
        };
        let any = [
            ENV_IDENTITY_SVC_ADDR,
            ENV_IDENTITY_TRUST_ANCHORS,
            ENV_IDENTITY_TRUST_ANCHORS_FILE,
            ENV_IDENTITY_TOKEN_FILE,
            ENV_IDENTITY_LOCAL_NAME,
        ]
        .iter()
        .any(|n| get(n).is_some());
        if !any {
            return Ok(None);
        }

        let (svc_addr, default_name) = match get(ENV_IDENTITY_SVC_ADDR) {
            Some(v) => {
                if let Err(reason) = parse_addr_list(&v) {
                    fail(ENV_IDENTITY_SVC_ADDR, &reason, Some(v.clone()));
                }
                (v, None)
            }
            None => (destination_addr.to_string(), destination_name.clone()),
        };
        let svc_name = match get(ENV_IDENTITY_SVC_NAME) {
            Some(v) => parse_identity_name(&v).unwrap_or_else(|reason| {
                fail(ENV_IDENTITY_SVC_NAME, &reason, Some(v));
                None
            }),
            None => default_name,
        };
        let token_file = match get(ENV_IDENTITY_TOKEN_FILE) {
            Some(v) => PathBuf::from(v),
            None => {
                fail(
                    ENV_IDENTITY_TOKEN_FILE,
                    "required when identity is configured",
                    None,
                );
                PathBuf::new()
            }
        };
        let local_name = match get(ENV_IDENTITY_LOCAL_NAME) {
            Some(v) if is_dns_name(v.trim_end_matches('.')) => {
                v.trim_end_matches('.').to_ascii_lowercase()
            }
            Some(v) => {
                fail(ENV_IDENTITY_LOCAL_NAME, "must be a DNS name", Some(v));
                String::new()
            }
            None => {
                fail(
                    ENV_IDENTITY_LOCAL_NAME,
                    "required when identity is configured",
                    None,
                );
                String::new()
            }
        };
        let inline = get(ENV_IDENTITY_TRUST_ANCHORS);
        let file = get(ENV_IDENTITY_TRUST_ANCHORS_FILE);
        let trust_anchors_file = file.as_ref().map(PathBuf::from);
        let trust_anchors_pem = match (inline, file) {
            (Some(_), Some(f)) => {
                fail(
                    ENV_IDENTITY_TRUST_ANCHORS_FILE,
                    "set either this or WEFT_PROXY_IDENTITY_TRUST_ANCHORS, not both",
                    Some(f),
                );
                String::new()
            }
            (Some(pem), None) => match check_anchors_pem(pem.as_bytes()) {
                Ok(_) => pem,
                Err(e) => {
                    fail(ENV_IDENTITY_TRUST_ANCHORS, &e.to_string(), None);
                    String::new()
                }
            },
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(pem) => match check_anchors_pem(pem.as_bytes()) {
                    Ok(_) => pem,
                    Err(e) => {
                        fail(ENV_IDENTITY_TRUST_ANCHORS_FILE, &e.to_string(), Some(path));
                        String::new()
                    }
                },
                Err(e) => {
                    fail(
                        ENV_IDENTITY_TRUST_ANCHORS_FILE,
                        &format!("cannot read: {e}"),
                        Some(path),
                    );
                    String::new()
                }
            },
            (None, None) => {
                fail(
                    ENV_IDENTITY_TRUST_ANCHORS,
                    "required when identity is configured (or WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE)",
                    None,
                );
                String::new()
            }
        };
        let mut duration = |name: &'static str, default: Duration| match get(name) {
            None => default,
            Some(v) => parse_duration(&v).unwrap_or_else(|reason| {
                fail(name, &reason, Some(v));
                default
            }),
        };
        let min_refresh = duration(ENV_IDENTITY_MIN_REFRESH, DEFAULT_IDENTITY_MIN_REFRESH);
        let max_refresh = duration(ENV_IDENTITY_MAX_REFRESH, DEFAULT_IDENTITY_MAX_REFRESH);
        if min_refresh > max_refresh {
            fail(
                ENV_IDENTITY_MAX_REFRESH,
                "must be at least WEFT_PROXY_IDENTITY_MIN_REFRESH",
                get(ENV_IDENTITY_MAX_REFRESH),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(IdentityConfig {
            svc_addr,
            svc_name,
            trust_anchors_pem,
            trust_anchors_file,
            token_file,
            local_name,
            min_refresh,
            max_refresh,
        }))
    }
}

/// The trust anchors must be PEM CERTIFICATE blocks (at least one), each an X.509 certificate.
/// Checked here so a bad value is a configuration error; `identity::tls` builds the store.
fn check_anchors_pem(pem: &[u8]) -> Result<(), String> {
    let mut n = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("invalid PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "unexpected PEM block {:?} (only CERTIFICATE is allowed)",
                block.label
            ));
        }
        x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| format!("invalid trust anchor: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("no CERTIFICATE block in the trust anchors".into());
    }
    Ok(())
}
