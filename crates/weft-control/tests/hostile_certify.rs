//! `Identity.Certify` against hostile requests over real gRPC: a CSR over the size limit, a
//! request over gRPC's message limit, an RSA key, a burst of garbage CSRs, and (beside
//! `tests/identity.rs`, which checks their status codes) a CSR for another identity and a token of
//! another workload. Each gets its precise status and nothing is issued: the leaves counted in
//! `GET /v1/identity/status` do not move until a good request comes, which is still served.

mod common;

use std::net::SocketAddr;

use common::hostile::{self, usage};
use common::identity::{certify, csr_for, register, SERVICES};
use tonic::Code;
use weft_control::ca::MAX_CSR;

/// The leaves the control plane has issued that are still valid (its ledger).
async fn live_leaves(api: SocketAddr) -> u64 {
    let (status, v) = common::http_json(api, "GET", "/v1/identity/status", "").await;
    assert_eq!(status, 200, "{v}");
    v["anchors"][0]["live_leaves"]
        .as_u64()
        .expect("live_leaves")
}

fn refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, says: &str) {
    let e = result.expect_err("refused");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(says),
        "want {says:?} in {:?}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_csrs_get_precise_errors_and_nothing_is_issued() {
    let _alone = hostile::alone().await;
    let dir = common::temp_dir("certify-hostile");
    std::fs::write(dir.join("services.yaml"), SERVICES).unwrap();
    let cp = common::start(common::config(&dir)).await;
    let (grpc, api) = (cp.grpc_addr, cp.api_addr);
    let (id, token) = register(api, "web-1").await;
    let (other_id, other_token) = register(api, "web-2").await;
    let leaves = live_leaves(api).await;
    let before = usage();

    // A CSR over 16 KiB: refused by its size, before it is parsed.
    let mut huge = csr_for(&id);
    huge.resize(1 << 20, 0);
    refused(
        certify(grpc, &id, &token, huge).await,
        Code::InvalidArgument,
        &format!("CSR is 1048576 bytes; at most {MAX_CSR} are accepted"),
    );
    // A request over gRPC's 4 MiB message limit: refused before the service sees it.
    refused(
        certify(grpc, &id, &token, vec![0x30; 8 << 20]).await,
        Code::OutOfRange,
        "message length too large",
    );
    // An RSA key (the fixture is a CSR for web-1 made by openssl).
    let rsa = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/certify/rsa-2048.csr.der"
    ))
    .unwrap();
    refused(
        certify(grpc, &id, &token, rsa).await,
        Code::InvalidArgument,
        "unsupported CSR public key: RSA",
    );
    // Another identity's CSR, another workload's token.
    refused(
        certify(grpc, &id, &token, csr_for(&other_id)).await,
        Code::InvalidArgument,
        "does not match the requested identity",
    );
    refused(
        certify(grpc, &id, &other_token, csr_for(&id)).await,
        Code::PermissionDenied,
        "grants identity",
    );
    // 200 garbage CSRs at once, each a different length of noise.
    let mut burst = Vec::new();
    for i in 0..200u64 {
        let (id, token) = (id.clone(), token.clone());
        burst.push(tokio::spawn(async move {
            certify(
                grpc,
                &id,
                &token,
                hostile::noise(i + 1, 64 + 37 * i as usize),
            )
            .await
        }));
    }
    for b in burst {
        refused(b.await.unwrap(), Code::InvalidArgument, "malformed CSR");
    }
    assert_eq!(
        live_leaves(api).await,
        leaves,
        "a refused request issued a leaf"
    );

    // A good request is still served, and counted.
    let issued = certify(grpc, &id, &token, csr_for(&id))
        .await
        .expect("a good CSR is certified");
    assert!(!issued.leaf_certificate.is_empty());
    assert_eq!(live_leaves(api).await, leaves + 1);
    let after = hostile::fds_settle(before.fds + hostile::FD_SLACK, common::LIMIT).await;
    hostile::assert_bounded("hostile CSRs", before, after, 64 * 1024);
    cp.shutdown().await.unwrap();
}
