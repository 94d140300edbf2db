//! nftables for the lab's namespaces: the target's filter derived from the truth, the
//! impairments, and the only two ways `nft` is run (`apply` a script, `query` a listing).
//!
//! One table, `inet pslab`, holds everything. Only TCP is filtered or impaired, except that
//! addresses in the extra-host ranges which are not hosts of the lab drop everything (they do
//! not exist), except in a wide lab's 198.19.0.0/16. ICMPv6 neighbour discovery to the primary target is never touched.

use std::fmt::Write;
use std::net::IpAddr;
use std::process::Stdio;

use anyhow::{bail, Context};

use super::truth::Truth;

/// Name of the table, family `inet`.
pub(crate) const TABLE: &str = "pslab";

/// The whole ruleset: sets, an empty impairment chain per direction, and the filter chain.
/// Replaces any previous `inet pslab` table atomically.
pub(crate) fn ruleset(truth: &Truth) -> String {
    let mut hosts4 = Vec::new();
    let mut hosts6 = Vec::new();
    let mut silent4 = Vec::new();
    let mut silent6 = Vec::new();
    let mut icmp4 = Vec::new();
    let mut icmp6 = Vec::new();
    for host in &truth.hosts {
        let (hosts, silent, icmp) = match host.addr {
            IpAddr::V4(_) => (&mut hosts4, &mut silent4, &mut icmp4),
            IpAddr::V6(_) => (&mut hosts6, &mut silent6, &mut icmp6),
        };
        hosts.push(host.addr.to_string());
        silent.extend(
            host.filtered_silent
                .iter()
                .map(|p| format!("{} . {p}", host.addr)),
        );
        icmp.extend(
            host.filtered_icmp
                .iter()
                .map(|p| format!("{} . {p}", host.addr)),
        );
    }

    let mut s = String::new();
    // Creating then deleting makes the script work whether or not the table exists.
    writeln!(s, "table inet {TABLE} {{}}\ndelete table inet {TABLE}").unwrap();
    writeln!(s, "table inet {TABLE} {{").unwrap();
    set(&mut s, "hosts4", "ipv4_addr", &hosts4);
    set(&mut s, "hosts6", "ipv6_addr", &hosts6);
    set(&mut s, "silent4", "ipv4_addr . inet_service", &silent4);
    set(&mut s, "silent6", "ipv6_addr . inet_service", &silent6);
    set(&mut s, "icmp4", "ipv4_addr . inet_service", &icmp4);
    set(&mut s, "icmp6", "ipv6_addr . inet_service", &icmp6);
    s.push_str(
        "\tchain impair_in {\n\t\ttype filter hook input priority filter - 10; policy accept;\n\t}\n\
         \tchain impair_out {\n\t\ttype filter hook output priority filter - 10; policy accept;\n\t}\n\
         \tchain impair_icmp {\n\t\ttype filter hook output priority filter - 10; policy accept;\n\t}\n\
         \tchain filter_in {\n\t\ttype filter hook input priority filter; policy accept;\n",
    );
    // A wide lab lets every address of 198.19.0.0/16 answer (`Truth::wide`).
    if !truth.wide {
        s.push_str("\t\tip daddr 198.19.0.0/16 ip daddr != @hosts4 drop\n");
    }
    s.push_str(
        "\t\tip6 daddr 2001:2:0:1::/64 ip6 daddr != @hosts6 drop\n\
         \t\tip daddr . tcp dport @silent4 drop\n\
         \t\tip6 daddr . tcp dport @silent6 drop\n\
         \t\tip daddr . tcp dport @icmp4 reject with icmpx admin-prohibited\n\
         \t\tip6 daddr . tcp dport @icmp6 reject with icmpx admin-prohibited\n\
         \t}\n}\n",
    );
    s
}

fn set(s: &mut String, name: &str, ty: &str, elements: &[String]) {
    write!(s, "\tset {name} {{\n\t\ttype {ty};\n").unwrap();
    // nft rejects `elements = { }`, so an empty set gets no elements line.
    if !elements.is_empty() {
        writeln!(s, "\t\telements = {{ {} }}", elements.join(", ")).unwrap();
    }
    s.push_str("\t}\n");
}

/// Loss as the `numgen random mod 10000` threshold: 0 = none, 10000 = everything.
pub(crate) fn loss_threshold(loss_pct: f64) -> u32 {
    (loss_pct.clamp(0.0, 100.0) * 100.0).round() as u32
}

/// The burst room of the lab's RST limiter unless told otherwise (`--rst-burst`).
pub const DEFAULT_RST_BURST: u32 = 10;

/// Replace the impairment chains' rules: TCP loss each way on the target's veths (one per
/// scanner), and a cap on RSTs leaving the target over all of them (`Some(0)` drops every RST)
/// with a burst room of `rst_burst` packets (at least 1; nft's token bucket holds exactly
/// that many packets, so with 1 every RST must follow the last by a full 1/rate).
pub(crate) fn impairments(
    veths: &[&str],
    loss_pct: f64,
    rst_limit: Option<u32>,
    rst_burst: u32,
) -> String {
    // One veth is matched as `"x"`, several as the anonymous set `{ "x", "y" }`.
    let quoted: Vec<String> = veths.iter().map(|v| format!("\"{v}\"")).collect();
    let veth = match quoted.as_slice() {
        [one] => one.clone(),
        all => format!("{{ {} }}", all.join(", ")),
    };
    let mut s =
        format!("flush chain inet {TABLE} impair_in\nflush chain inet {TABLE} impair_out\n");
    let loss = loss_threshold(loss_pct);
    if loss > 0 {
        // numgen yields 0..=9999, and nft rejects the constant 10000: total loss has no numgen.
        let sample = if loss >= 10000 {
            String::new()
        } else {
            format!(" numgen random mod 10000 < {loss}")
        };
        for (chain, dir) in [("impair_in", "iifname"), ("impair_out", "oifname")] {
            writeln!(
                s,
                "add rule inet {TABLE} {chain} {dir} {veth} meta l4proto tcp{sample} drop"
            )
            .unwrap();
        }
    }
    // After the loss rule, so at most `n` RSTs a second actually leave.
    match rst_limit {
        None => {}
        Some(0) => {
            writeln!(
                s,
                "add rule inet {TABLE} impair_out oifname {veth} tcp flags rst drop"
            )
            .unwrap();
        }
        Some(n) => {
            writeln!(
                s,
                "add rule inet {TABLE} impair_out oifname {veth} tcp flags rst limit rate over {n}/second burst {b} packets drop",
                b = rst_burst.max(1)
            )
            .unwrap();
        }
    }
    s
}

/// Replace the ICMP impairment chain's rules: at most `limit` ICMP and ICMPv6 destination
/// unreachables a second leave the target over `veths` (each family its own limiter;
/// `Some(0)` drops them all). Neighbour discovery and echo are never touched.
pub(crate) fn icmp_limit(veths: &[&str], limit: Option<u32>) -> String {
    let quoted: Vec<String> = veths.iter().map(|v| format!("\"{v}\"")).collect();
    let veth = match quoted.as_slice() {
        [one] => one.clone(),
        all => format!("{{ {} }}", all.join(", ")),
    };
    let mut s = format!("flush chain inet {TABLE} impair_icmp\n");
    let action = match limit {
        None => return s,
        Some(0) => "drop".to_owned(),
        // A burst room of 50: replies come in the scanner's send batches, and a room smaller
        // than one batch's share would cap the rate below `n`.
        Some(n) => format!("limit rate over {n}/second burst 50 packets drop"),
    };
    for m in [
        "icmp type destination-unreachable",
        "icmpv6 type destination-unreachable",
    ] {
        writeln!(
            s,
            "add rule inet {TABLE} impair_icmp oifname {veth} {m} {action}"
        )
        .unwrap();
    }
    s
}

/// Feed `script` to `nft -f -` inside namespace `ns`. Every nftables change of the lab and
/// the benchmarks goes through here.
pub(crate) fn apply(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = super::netns_exec(ns, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {}\nscript:\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `nft ARGS` inside namespace `ns` (listing a table, resetting counters); its stdout.
pub(crate) fn query(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    super::run(super::netns_exec(ns, "nft").args(args))
}

// --- SYN-proxy host (`LabConfig::syn_proxy`) -------------------------------------------

/// The lab's SYN-proxy host: every TCP port of this address answers SYN-ACK, as a SYN proxy
/// or tarpit in front of a network does. It is not in the truth.
pub(crate) const SYN_PROXY_V4: &str = "198.19.255.254";

/// A NAT redirect of every TCP port of [`SYN_PROXY_V4`] to the wildcard listener's port 80
/// (the reply is translated back, so each port answers for itself).
pub(crate) fn syn_proxy() -> String {
    format!(
        "add chain inet {TABLE} syn_proxy {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add rule inet {TABLE} syn_proxy ip daddr {SYN_PROXY_V4} tcp dport 1-65535 redirect to :80\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_lists_every_filtered_port_per_host() {
        let truth = Truth::compute("x", 2);
        let s = ruleset(&truth);
        assert!(s.contains("198.18.0.2 . 135"), "{s}");
        assert!(s.contains("198.19.0.2 . 30002"), "{s}");
        assert!(s.contains("2001:2:0:1::1 . 30001"), "{s}");
        assert!(s.contains("2001:2::2 . 23"), "{s}");
        assert!(!s.contains("198.18.0.2 . 30001"), "{s}");
        assert!(
            s.contains("ip daddr 198.19.0.0/16 ip daddr != @hosts4 drop"),
            "{s}"
        );
        let empty = ruleset(&Truth::compute("x", 0));
        assert!(!empty.contains("elements = {  }"), "{empty}");
        let wide = ruleset(&Truth::compute("x", 2).with_wide(true));
        assert!(!wide.contains("198.19.0.0/16"), "{wide}");
        assert!(
            wide.contains("2001:2:0:1::/64 ip6 daddr != @hosts6 drop"),
            "{wide}"
        );
        assert!(wide.contains("198.19.0.2 . 30002"), "{wide}");
    }

    #[test]
    fn icmp_limit_touches_only_destination_unreachables() {
        let none = icmp_limit(&["pst0"], None);
        assert_eq!(none, "flush chain inet pslab impair_icmp\n");
        let some = icmp_limit(&["pst0", "pst1"], Some(1500));
        assert!(
            some.contains("impair_icmp oifname { \"pst0\", \"pst1\" } icmp type destination-unreachable limit rate over 1500/second burst 50 packets drop"),
            "{some}"
        );
        assert!(
            some.contains("icmpv6 type destination-unreachable limit rate over 1500/second"),
            "{some}"
        );
        assert!(icmp_limit(&["pst0"], Some(0)).contains("destination-unreachable drop"));
        assert!(ruleset(&Truth::compute("x", 0)).contains("chain impair_icmp {"));
    }

    #[test]
    fn syn_proxy_redirects_every_port_of_one_address() {
        let s = syn_proxy();
        assert!(s.contains("type nat hook prerouting"), "{s}");
        assert!(
            s.contains("ip daddr 198.19.255.254 tcp dport 1-65535 redirect to :80"),
            "{s}"
        );
    }

    #[test]
    fn impairments_scale_and_limit() {
        assert_eq!(loss_threshold(0.0), 0);
        assert_eq!(loss_threshold(2.5), 250);
        assert_eq!(loss_threshold(100.0), 10000);
        let none = impairments(&["pst0"], 0.0, None, 10);
        assert_eq!(none.lines().count(), 2, "{none}");
        let both = impairments(&["pst0"], 1.0, Some(50), 10);
        assert!(
            both.contains("iifname \"pst0\" meta l4proto tcp numgen random mod 10000 < 100 drop")
        );
        assert!(both.contains("limit rate over 50/second burst 10 packets drop"));
        assert!(impairments(&["pst0"], 0.0, Some(20_000), 2)
            .contains("limit rate over 20000/second burst 2 packets drop"));
        assert!(impairments(&["pst0"], 0.0, Some(9), 0).contains("burst 1 packets"));
        assert!(impairments(&["pst0"], 0.0, Some(0), 10).contains("tcp flags rst drop"));
        let all = impairments(&["pst0"], 100.0, None, 10);
        assert!(
            all.contains("oifname \"pst0\" meta l4proto tcp drop"),
            "{all}"
        );
        assert!(!all.contains("numgen"), "{all}");
        let two = impairments(&["pst0", "pst1"], 0.0, Some(0), 10);
        assert!(
            two.contains("oifname { \"pst0\", \"pst1\" } tcp flags rst drop"),
            "{two}"
        );
    }
}
