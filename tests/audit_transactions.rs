//! SPEC section 5: the transactions log, one JSON line per completed request, reopened on
//! SIGUSR1 (`reopen`) for logrotate.

#[path = "common/audit.rs"]
mod common;

use common::TempDir;
use ssp::audit::{Transaction, Transactions};

fn transaction(trace: &str) -> Transaction {
    Transaction {
        request: common::facts(trace).into(),
        status: 200,
        bytes_in: 0,
        bytes_out: 321,
        tls_handshake_ms: Some(2.5),
        queue_ms: 0.02,
        upstream_connect_ms: None,
        upstream_tls_ms: None,
        ttfb_ms: Some(4.0),
        total_ms: 5.5,
        reused: true,
    }
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_transaction_is_one_json_line_with_its_timings() {
    let dir = TempDir::new("tx");
    let path = dir.path().join("transactions.log");
    let log = Transactions::start(Some(path.clone())).unwrap();
    for i in 0..100 {
        log.log(transaction(&format!("t-{i}")));
    }
    log.shutdown();
    let lines = lines(&path);
    assert_eq!(lines.len(), 100);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["trace_id"], format!("t-{i}"));
        assert_eq!(line["total_ms"], 5.5);
        assert_eq!(line["upstream_connect_ms"], serde_json::Value::Null);
        assert_eq!(line["reused"], true);
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn reopen_follows_logrotate_moving_the_file() {
    let dir = TempDir::new("txrotate");
    let path = dir.path().join("transactions.log");
    let rotated = dir.path().join("transactions.log.1");
    let log = Transactions::start(Some(path.clone())).unwrap();
    log.log(transaction("before"));
    // logrotate: rename, then signal.
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen();
    log.log(transaction("after"));
    log.shutdown();
    assert_eq!(
        lines(&rotated)
            .iter()
            .map(|l| l["trace_id"].clone())
            .collect::<Vec<_>>(),
        ["before"]
    );
    assert_eq!(
        lines(&path)
            .iter()
            .map(|l| l["trace_id"].clone())
            .collect::<Vec<_>>(),
        ["after"]
    );
}

#[test]
fn a_switched_off_log_does_nothing_and_a_bad_path_is_an_error() {
    let off = Transactions::start(None).unwrap();
    off.log(transaction("nowhere"));
    off.reopen();
    off.shutdown();
    let dir = TempDir::new("txbad");
    let error = Transactions::start(Some(dir.path().join("missing/transactions.log"))).unwrap_err();
    assert!(error.to_string().contains("missing/transactions.log"), "{error}");
}
