use super::*;

#[test]
fn only_loopback_peers_may_speak_plaintext() {
    for ok in [
        "127.0.0.1:1",
        "127.8.9.10:1",
        "[::1]:1",
        "[::ffff:127.0.0.1]:1",
    ] {
        assert!(plaintext_allowed(ok.parse().unwrap()), "{ok}");
    }
    for no in [
        "198.18.0.1:1",
        "10.0.0.1:1",
        "[::ffff:10.0.0.1]:1",
        "[2001:db8::1]:1",
        "0.0.0.0:1",
    ] {
        assert!(!plaintext_allowed(no.parse().unwrap()), "{no}");
    }
}
