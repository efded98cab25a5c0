use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr.to_string()
}

/// A listener that writes its own name to each connection it accepts.
async fn named_listener(name: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s, name.as_bytes()).await;
        }
    });
    addr
}

async fn who(c: &Connector) -> String {
    let mut io = c.connect().await.expect("connect");
    let mut buf = [0u8; 1];
    io.read_exact(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_dead_address_is_passed_over_and_the_one_that_answered_is_tried_first() {
    let dead = closed_port().await;
    let a = named_listener("a").await;
    let b = named_listener("b").await;
    let c = Connector::new(&format!("{dead}, {a},{b}"), None, Duration::from_secs(2));
    assert_eq!(c.authority(), dead);
    assert_eq!(who(&c).await, "a");
    // Sticky: the next connection goes to `a` again, not back to the dead one first.
    assert_eq!(c.inner.preferred.load(Ordering::Relaxed), 1);
    assert_eq!(who(&c).await, "a");
}

#[tokio::test]
async fn when_nothing_answers_the_error_names_every_address() {
    let one = closed_port().await;
    let two = closed_port().await;
    let c = Connector::new(&format!("{one},{two}"), None, Duration::from_secs(2));
    let err = c.connect().await.err().expect("nothing listens");
    let text = err.to_string();
    assert!(text.contains(&one) && text.contains(&two), "{text}");
}

#[tokio::test]
async fn a_name_resolving_to_several_addresses_counts_as_all_of_them() {
    // `localhost` resolves to 127.0.0.1 (and maybe ::1): the live listener is among them.
    let a = named_listener("a").await;
    let port = a.rsplit_once(':').expect("port").1;
    let c = Connector::new(&format!("localhost:{port}"), None, Duration::from_secs(2));
    assert_eq!(who(&c).await, "a");
}

#[test]
fn lists_are_split_on_commas_and_trimmed() {
    assert_eq!(
        split(" a:1 , b:2,,"),
        vec!["a:1".to_string(), "b:2".to_string()]
    );
}
