//! The issuance records (`ca_reload::Records`) with the Kubernetes store: one ConfigMap per
//! control-plane instance in the control namespace, `weft-issued-<instance>`, labelled
//! [`LABEL`] so replicas list each other's, holding the ledger JSON under [`DATA_KEY`]. Each
//! replica writes only its own (a plain update: nobody else writes it); the leader deletes
//! other instances' ConfigMaps once their leaves have all expired, each only at the
//! `resourceVersion` it read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};

use crate::ca_reload::LedgerFile;

/// The label every issuance-record ConfigMap carries (value `issuance`).
pub const LABEL: &str = "weft.io/record";
const LABEL_VALUE: &str = "issuance";
/// The ConfigMap key holding the ledger JSON.
pub const DATA_KEY: &str = "ledger.json";
/// ConfigMap names: this prefix and the instance.
pub const NAME_PREFIX: &str = "weft-issued-";

/// The records' ConfigMaps in one namespace.
#[derive(Clone)]
pub struct ConfigMaps {
    api: Api<ConfigMap>,
}

/// A ConfigMap's name for `instance` (instance names are ASCII letters, digits and dashes;
/// object names must be lower case).
pub fn name(instance: &str) -> String {
    format!("{NAME_PREFIX}{}", instance.to_ascii_lowercase())
}

impl ConfigMaps {
    pub fn new(client: kube::Client, namespace: &str) -> ConfigMaps {
        ConfigMaps {
            api: Api::namespaced(client, namespace),
        }
    }

    /// Every record ConfigMap's ledger with its `resourceVersion` (ConfigMaps that do not
    /// hold a ledger are skipped: not ours, or written by a newer version).
    pub async fn list(&self) -> Result<Vec<(LedgerFile, String)>, kube::Error> {
        let selector = format!("{LABEL}={LABEL_VALUE}");
        let list = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|cm| {
                let version = cm.metadata.resource_version.clone().unwrap_or_default();
                let text = cm.data.as_ref()?.get(DATA_KEY)?;
                let file = serde_json::from_str(text).ok()?;
                Some((file, version))
            })
            .collect())
    }

    /// Writes `file` to its instance's ConfigMap: an update, or a create the first time.
    pub async fn write(&self, file: &LedgerFile) -> Result<(), kube::Error> {
        let name = name(&file.instance);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(LABEL.into(), LABEL_VALUE.into())])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                DATA_KEY.into(),
                serde_json::to_string(file).unwrap_or_default(),
            )])),
            ..Default::default()
        };
        // No resourceVersion: an unconditional update of an object only this instance writes.
        match self.api.replace(&name, &PostParams::default(), &cm).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                self.api.create(&PostParams::default(), &cm).await.map(drop)
            }
            other => other.map(drop),
        }
    }

    /// Deletes `instance`'s ConfigMap if it is still at `version` (a `409` means someone
    /// wrote it since: it is looked at again next time).
    pub async fn delete(&self, instance: &str, version: &str) -> Result<(), kube::Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version.to_string()),
                uid: None,
            }),
            ..Default::default()
        };
        match self.api.delete(&name(instance), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
