//! Which way a one-shot scan's probes leave: `--router-mac` as given, else link-layer frames
//! to the one next hop the kernel's tables give every target (`nexthop::choose`), else the
//! kernel's IP path.

use std::net::IpAddr;

use pnet_datalink::MacAddr;
use portscope_transport::{netlink, nexthop};

use crate::args::ScanArgs;
use crate::SendVia;

/// The send path for `ranges` (the scan's targets) and a line saying which it is and why.
pub(crate) fn choose(
    args: &ScanArgs,
    ranges: impl IntoIterator<Item = (IpAddr, IpAddr)>,
) -> (SendVia, String) {
    let given = args.link.via(args.interface.as_deref());
    if given != SendVia::Ip {
        let line = describe(&given, "--router-mac");
        return (given, line);
    }
    if !args.auto_link {
        return (SendVia::Ip, describe(&SendVia::Ip, "--auto-link off"));
    }
    let hop = netlink::read_tables()
        .map_err(|e| format!("the kernel's tables could not be read: {e}"))
        .and_then(|t| nexthop::choose(&t, ranges).map_err(|why| why.to_string()));
    let (via, why) = match hop {
        Ok(hop) => {
            let gateways: Vec<String> = hop.via.iter().map(IpAddr::to_string).collect();
            let via = SendVia::Link {
                interface: hop.interface,
                next_hop: hop.mac,
                qdisc_bypass: args.link.qdisc_bypass,
            };
            (
                via,
                format!("the next hop of every target: {}", gateways.join(", ")),
            )
        }
        Err(why) => (SendVia::Ip, why),
    };
    let line = describe(&via, &why);
    (via, line)
}

/// `link-layer frames on IF to MAC (WHY)` or the IP path.
fn describe(via: &SendVia, why: &str) -> String {
    match via {
        SendVia::Link {
            interface,
            next_hop,
            qdisc_bypass,
        } => format!(
            "link-layer frames on {interface} to {}{} ({why})",
            MacAddr::from(*next_hop),
            if *qdisc_bypass {
                ", qdisc bypassed"
            } else {
                ""
            }
        ),
        SendVia::Ip => format!("the kernel's IP path ({why})"),
    }
}
