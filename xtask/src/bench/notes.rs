//! The benchmark's footnotes: every tool's settings and what each figure means, printed
//! under the table and written to `target/bench/results.json`.

use super::options::Options;
use super::zmap::Zmap;

/// Footnotes: settings of every tool, and what the numbers mean.
pub(super) fn notes(opts: &Options, zmap: &Zmap, cpus: usize) -> Vec<String> {
    vec![
        format!(
            "peers: masscan and nmap from Debian; {}{}",
            zmap.describe(),
            if zmap.multiport() {
                " probes every scenario (-p RANGE, -f saddr,sport, first SYN-ACK of each pair)"
            } else {
                " probes one port per run and sits out the many-port scenarios"
            }
        ),
        format!(
            "rates: Portscope, masscan and zmap at {} pps; nmap has no fixed rate: -T5 (initial/max RTT timeout 250/300 ms, \
             at most 2 retries, scan delay at most 5 ms) and a second row adding --min-rate 100000 --max-retries 2",
            opts.rate
        ),
        "waits: Portscope defaults (silent ports only retried: at least 2 retries, or 1 after a first round of 9,000+ \
         answers, more while the loss measured from them says a port may still be wrong, at most 10; per-round wait \
         2 x p99 + p50 of the measured RTT, at least 3 ms, at most 1 s); \
         masscan --wait 1 (default 10) and no retries (default; a retry would re-probe every pair); \
         zmap --cooldown-time 1 (default 8), one probe per target (default); nmap by its timing template"
            .into(),
        format!(
            "Portscope runs {threads} send thread(s) {path} and its receive thread on {cpus} CPUs that it shares with the target's kernel \
             (every SYN, SYN-ACK and RST of the lab is processed by the same machine, most of it in the sending thread's \
             sendmmsg) and with the other scanner-side work; the ceiling's ps-blast sends on as many threads, one per CPU",
            threads = opts.send_threads(cpus),
            path = "sending link-layer frames to the lab's next hop, which it finds in the kernel's tables by itself \
                    (--auto-link, on by default; masscan and zmap are given it, ps-blast too)"
        ),
        "wall s: spawn to exit of `ip netns exec ... scanner` (1 ms polling); probes/s: the tool's own count / wall, \
         or (*) SYNs counted arriving at the target / wall where the tool prints no count (masscan); \
         of ceiling: probes/s over the answering ceiling; in scenario 3 (one port on every address of a /16, all \
         answering) over the sweep ceiling, ps-blast into that /16 on that port, since there every probe draws a SYN-ACK \
         and the scanner's kernel an RST: three packets a probe where the answering ceiling's closed ports take two"
            .into(),
        "note `scan T s = X% of ceiling`: Portscope's own scan time (`done in`: submission to last result, its \
         sockets already open, which is what a long-lived engine, the daemon behind the API, pays per scan) and its \
         probes over that time against the ceiling, like for like with ps-blast, which counts over its own send time; \
         the wall figure adds process start, socket and ring set-up and teardown (kernel RCU grace periods) and exit"
            .into(),
        "CPU s: user+sys of the scanner and its reaped children (getrusage RUSAGE_CHILDREN delta); \
         softirq work of the veth, much of it the target's, is charged to whoever is on the CPU, usually the scanner"
            .into(),
        "open found/exp: reported open that are open / open in the lab truth; false opens: reported open but not open; \
         3-state: pairs whose open/closed/filtered state is exactly right (Portscope --show closed NDJSON, nmap XML); \
         masscan and zmap report open ports only"
            .into(),
        "SYN-ACKs sent: counted leaving the target (nftables, target namespace) during the run; a tool that finds \
         fewer open ports than that lost replies on its own receive side (a port probed twice may answer twice)"
            .into(),
        "Portscope writes a line for every pair (--show closed: 1,048,560 NDJSON lines in scenario 2); nmap's XML \
         collapses the closed ports into one element; masscan and zmap write open ports only"
            .into(),
        format!(
            "each tool ran {} time(s), interleaved (run 1 of every tool, then run 2, ...), so the machine's drift \
             falls on all alike; the row is the run with the median wall time; nmap is killed after {} s",
            opts.runs,
            opts.nmap_cap.as_secs()
        ),
    ]
}
