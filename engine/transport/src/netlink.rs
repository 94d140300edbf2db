//! Reads the kernel's rule, route, neighbour and link tables over rtnetlink (dumps through
//! `netlink-sys`, decoded by `netlink-packet-route`) into [`crate::nexthop::Tables`]. No
//! privilege needed; the decision itself is [`crate::nexthop::choose`].

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rt};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::nexthop::{
    Link, Neighbour, Route, RouteKind, Tables, TABLE_DEFAULT, TABLE_LOCAL, TABLE_MAIN,
};

/// The kernel's default rules, as (priority, table): any other rule is policy routing.
const DEFAULT_RULES: [(u32, u32); 3] = [
    (0, TABLE_LOCAL),
    (32766, TABLE_MAIN),
    (32767, TABLE_DEFAULT),
];

/// Dumps the four tables of this network namespace, both families.
pub fn read_tables() -> io::Result<Tables> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut t = Tables::default();
    for m in dump(&mut sock, Rt::GetRule(RuleMessage::default()))? {
        // Multicast routing's rules (families 128 and 129) do not route probes.
        if let Rt::NewRule(r) = m {
            let unicast = matches!(r.header.family, AddressFamily::Inet | AddressFamily::Inet6);
            t.custom_rules |= unicast && !DEFAULT_RULES.contains(&rule_key(&r));
        }
    }
    for m in dump(&mut sock, Rt::GetRoute(RouteMessage::default()))? {
        if let Rt::NewRoute(r) = m {
            t.routes.extend(route(&r));
        }
    }
    for m in dump(&mut sock, Rt::GetNeighbour(NeighbourMessage::default()))? {
        if let Rt::NewNeighbour(n) = m {
            t.neighbours.extend(neighbour(&n));
        }
    }
    for m in dump(&mut sock, Rt::GetLink(LinkMessage::default()))? {
        if let Rt::NewLink(l) = m {
            t.links.extend(link(&l));
        }
    }
    Ok(t)
}

/// Sends one dump request; every message of the answer up to `Done`.
fn dump(sock: &mut Socket, request: Rt) -> io::Result<Vec<Rt>> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::from(request));
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = sock.recv(&mut &mut rx[..], 0)?;
        let mut at = 0;
        while at < size {
            let msg = NetlinkMessage::<Rt>::deserialize(&rx[at..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                // The tables changed during the dump: the caller keeps the IP path.
                return Err(io::Error::other("the tables changed during the dump"));
            }
            // Messages in one datagram start on 4-byte boundaries (NLMSG_ALIGN).
            let len = (msg.header.length as usize + 3) & !3;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => return Err(io::Error::other(format!("{e:?}"))),
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

fn rule_key(r: &RuleMessage) -> (u32, u32) {
    let mut key = (0, u32::from(r.header.table));
    for a in &r.attributes {
        match a {
            RuleAttribute::Priority(p) => key.0 = *p,
            RuleAttribute::Table(t) => key.1 = *t,
            _ => {}
        }
    }
    key
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

/// An IPv4 or IPv6 route; `None` for other families.
fn route(r: &RouteMessage) -> Option<Route> {
    let v6 = match r.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let mut out = Route {
        table: u32::from(r.header.table),
        // A route for some sources or some TOS only is not the one every probe takes.
        kind: match r.header.kind {
            _ if r.header.source_prefix_length > 0 || r.header.tos != 0 => RouteKind::Other,
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local => RouteKind::Local,
            _ => RouteKind::Other,
        },
        dst: if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        },
        prefix: r.header.destination_prefix_length,
        oif: None,
        gateway: None,
        multipath: false,
        priority: 0,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => out.table = *t,
            RouteAttribute::Destination(d) => out.dst = route_addr(d)?,
            RouteAttribute::Oif(i) => out.oif = Some(*i),
            RouteAttribute::Gateway(g) => out.gateway = route_addr(g),
            RouteAttribute::MultiPath(_) => out.multipath = true,
            RouteAttribute::Priority(p) => out.priority = *p,
            _ => {}
        }
    }
    Some(out)
}

fn neighbour(n: &NeighbourMessage) -> Option<Neighbour> {
    let mut addr = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                addr = Some(IpAddr::V4(*v));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                addr = Some(IpAddr::V6(*v));
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(&l[..]).ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        ifindex: n.header.ifindex,
        addr: addr?,
        mac,
        resolved: matches!(
            n.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
        ),
    })
}

fn link(l: &LinkMessage) -> Option<Link> {
    let name = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    Some(Link {
        index: l.header.index,
        name,
        ethernet: l.header.link_layer_type == LinkLayerType::Ether,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexthop::RouteKind;

    /// Every namespace has a loopback with its local routes: the dump sees them.
    #[test]
    fn the_tables_of_this_namespace_include_loopback() {
        let t = read_tables().unwrap();
        assert!(t.links.iter().any(|l| l.name == "lo" && !l.ethernet));
        assert!(t.routes.iter().any(|r| r.table == TABLE_LOCAL
            && r.kind == RouteKind::Local
            && r.dst == "127.0.0.1".parse::<IpAddr>().unwrap()));
        // The test runs where nobody set policy rules (CI, the lab).
        assert!(!t.custom_rules, "only the kernel's default rules");
    }
}
