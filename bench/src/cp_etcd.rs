//! The control-plane benchmark's etcd store: the services and endpoints of `cp-store`, one key
//! per resource under `PREFIX/resources/` (the etcd store's layout, see
//! `weft_control::store::etcd`): `resources/services/svc-NNN` holds one Service,
//! `resources/workloads/svc-NNN-J` one ExternalWorkload. 5,000 endpoints are 5,500 keys, so a
//! replica's work per change is visible: it re-parses only the keys that changed but re-scans the
//! whole set.
//!
//! `cp-etcd-load` writes the keys in transactions of `--batch` puts. `cp-scale`'s bulk change is
//! one transaction rewriting `svc-NNN-0` of every service: one revision, one watch event batch,
//! every service changed (the etcd counterpart of rewriting `workloads-00.yaml`).

use std::time::Instant;

use tonic::transport::Channel;
use weft_control::etcd::proto::{self, PutRequest, Request, RequestOp, TxnRequest, TxnResponse};
use weft_control::etcd::{Client, Target};

use crate::cp_store::LayoutArgs;

/// A connection to the benchmark's etcd prefix.
#[derive(Clone)]
pub struct Etcd {
    target: Target,
    client: Client,
    channel: Channel,
}

impl Etcd {
    /// `store`: `etcd://HOST:PORT/PREFIX`, the address `weft control --store` gets.
    pub async fn connect(store: &str) -> anyhow::Result<Etcd> {
        let target = Target::parse(store)?;
        let client = Client::new(&target.endpoints)?;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", target.endpoints[0]))?
                .tcp_nodelay(true)
                .connect()
                .await?;
        Ok(Etcd {
            target,
            client,
            channel,
        })
    }

    pub fn service_key(&self, l: &LayoutArgs, i: usize) -> Vec<u8> {
        self.target
            .key(&format!("resources/services/{}", l.service(i)))
    }

    pub fn workload_key(&self, l: &LayoutArgs, i: usize, j: usize) -> Vec<u8> {
        self.target
            .key(&format!("resources/workloads/{}", l.workload(i, j)))
    }

    /// Every key under `PREFIX/<rest>`.
    pub async fn list(&self, rest: &str) -> anyhow::Result<Vec<proto::KeyValue>> {
        Ok(self.client.list(&self.target.key(rest)).await?.0)
    }

    /// The value of one key, if it exists.
    pub async fn get(&self, key: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.client.get(key).await?.map(|kv| kv.value))
    }

    /// Writes every key in one transaction (etcd's `--max-txn-ops` bounds how many); returns
    /// the revision of the write.
    pub async fn put_all(&self, kvs: Vec<(Vec<u8>, Vec<u8>)>) -> anyhow::Result<i64> {
        let req = TxnRequest {
            compare: Vec::new(),
            success: kvs
                .into_iter()
                .map(|(key, value)| RequestOp {
                    request: Some(Request::Put(PutRequest {
                        key,
                        value,
                        lease: 0,
                    })),
                })
                .collect(),
            failure: Vec::new(),
        };
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await?;
        let codec = tonic_prost::ProstCodec::<TxnRequest, TxnResponse>::default();
        let path = http::uri::PathAndQuery::from_static(proto::TXN);
        let resp = grpc
            .unary(tonic::Request::new(req), path, codec)
            .await
            .map_err(|s| anyhow::anyhow!("etcd txn: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        anyhow::ensure!(
            resp.succeeded,
            "etcd txn without conditions did not succeed"
        );
        Ok(proto::ResponseHeader::revision_of(&resp.header))
    }

    /// Endpoint 0 of every service at `generation`'s addresses: the bulk change.
    pub fn first_endpoints(&self, l: &LayoutArgs, generation: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..l.services)
            .map(|i| {
                let doc = l.workload_doc_of(i, 0, generation);
                (self.workload_key(l, i, 0), doc.into_bytes())
            })
            .collect()
    }

    /// Which generation endpoint 0 of every service holds now (see `LayoutArgs::addr`), or an
    /// error when the prefix is not what `cp-etcd-load` wrote with these layout arguments.
    pub async fn generation(&self, l: &LayoutArgs) -> anyhow::Result<u32> {
        let key = self.workload_key(l, 0, 0);
        let value = self.get(&key).await?.unwrap_or_default();
        (0..2)
            .find(|&g| value == l.workload_doc_of(0, 0, g).as_bytes())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: not the store `weft-bench cp-etcd-load` writes with these layout arguments",
                    String::from_utf8_lossy(&key)
                )
            })
    }
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// The store address `weft control --store` gets: `etcd://HOST:PORT/PREFIX`.
    #[arg(long)]
    etcd: String,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Puts per transaction (etcd's `--max-txn-ops` must allow it; its default is 128).
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

/// Writes every Service and ExternalWorkload key under an empty prefix and prints
/// `{"services","workloads","keys","bytes","txns","seconds","revision"}`.
pub async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let etcd = Etcd::connect(&args.etcd).await?;
    let l = &args.layout;
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(
        etcd.list("").await?.is_empty(),
        "{}: the prefix is not empty (start from a fresh prefix)",
        args.etcd
    );
    let mut kvs: Vec<(Vec<u8>, Vec<u8>)> = (0..l.services)
        .map(|i| (etcd.service_key(l, i), l.service_doc(i).into_bytes()))
        .collect();
    for i in 0..l.services {
        for j in 0..l.per_service {
            kvs.push((
                etcd.workload_key(l, i, j),
                l.workload_doc_of(i, j, 0).into_bytes(),
            ));
        }
    }
    let keys = kvs.len();
    let bytes: usize = kvs.iter().map(|(k, v)| k.len() + v.len()).sum();
    let t = Instant::now();
    let (mut txns, mut revision) = (0, 0);
    while !kvs.is_empty() {
        let rest = kvs.split_off(kvs.len().saturating_sub(args.batch));
        revision = etcd.put_all(rest).await?;
        txns += 1;
    }
    println!(
        "{}",
        serde_json::json!({
            "services": l.services,
            "workloads": l.services * l.per_service,
            "keys": keys,
            "bytes": bytes,
            "txns": txns,
            "seconds": t.elapsed().as_secs_f64(),
            "revision": revision,
        })
    );
    Ok(())
}
