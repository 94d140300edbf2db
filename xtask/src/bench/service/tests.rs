//! Unit tests of the service benchmark's parsers, options and truth checks.

use super::agent::in_lab;
use super::metrics::{parse_metrics, parse_softnet};
use super::results::{median, want};
use super::session::asn_table;
use super::*;
use crate::lab::Truth;

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn options() {
    let o = Options::parse(&[]).unwrap();
    assert_eq!((o.repeats, o.concurrent, o.pollers), (3, 100, 200));
    assert!(!o.skip_extra);
    let o = Options::parse(&args(&[
        "--repeats",
        "1",
        "--concurrent",
        "5",
        "--skip-extra",
    ]))
    .unwrap();
    assert_eq!((o.repeats, o.concurrent, o.skip_extra), (1, 5, true));
    for bad in [
        &["--concurrent", "500"][..],
        &["--repeats", "0"],
        &["--max-running-alt", "65"],
        &["--pollers"],
        &["--quick"],
    ] {
        assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn engine_metrics_are_parsed() {
    let text = "# HELP portscope_engine_probes_sent_total Probes.\n\
                # TYPE portscope_engine_probes_sent_total counter\n\
                portscope_engine_probes_sent_total 131070\n\
                portscope_engine_scans{state=\"queued\"} 3\n\
                portscope_engine_scans{state=\"running\"} 8\n\
                portscope_engine_scans{state=\"complete\"} 12\n\
                portscope_engine_scans{state=\"failed\"} 1\n\
                portscope_engine_discards_total{reason=\"no_scan\"} 7\n";
    let s = parse_metrics(text).unwrap();
    assert_eq!(
        (s.probes_sent, s.running, s.queued, s.complete, s.failed),
        (131_070, 8, 3, 12, 1)
    );
    assert_eq!(s.discards.get("no_scan"), Some(&7));
    assert!(parse_metrics("nothing 1\n").is_err());
    let softnet = "00a1b2c3 00000010 00000000 00000000\n00000001 0000000f 00000002 00000000\n";
    assert_eq!(parse_softnet(softnet), 31);
}

#[test]
fn agent_addresses_stay_in_the_lab() {
    assert!(in_lab(API_ADDR.ip()) && in_lab(truth::extra_v4(truth::MAX_EXTRA_HOSTS).into()));
    assert!(!in_lab("10.0.0.1".parse().unwrap()));
    assert!(!in_lab("198.20.0.1".parse().unwrap()));
    assert!(!in_lab("2001:2::2".parse().unwrap()));
    assert!(agent(&args(&[
        "--api",
        "10.0.0.1:80",
        "--hook",
        "198.19.0.9:9999"
    ]))
    .is_err());
    // Every client and the receiver are lab hosts (the lab drops the other addresses).
    let o = Options::parse(&[]).unwrap();
    assert_eq!(o.main_lab_hosts(), 402);
    assert!(Options::parse(&args(&["--concurrent", "400", "--pollers", "199"])).is_err());
}

#[test]
fn medians_and_asn_table() {
    assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median([4.0, 1.0]), Some(2.5));
    assert_eq!(median([]), None);
    let t = asn_table(2);
    assert!(t.contains("198.18.0.2/32 AS4200000000"));
    assert!(t.contains("198.19.0.2/32 AS4200000002"));
}

#[test]
fn deep_truth_of_an_extra_host() {
    let truth = Truth::compute("t", 3);
    let ip: IpAddr = truth::extra_v4(2).into();
    let (open, filtered) = want(&truth, ip, "deep").unwrap();
    assert!(open.contains(&20002) && open.contains(&22));
    assert!(filtered.contains(&30002) && filtered.contains(&23));
    let (fopen, _) = want(&truth, ip, "fast").unwrap();
    assert!(!fopen.contains(&20002) && fopen.contains(&22));
}
