//! Whether a scan's probes can leave as link-layer frames to one next hop (`sys::LinkSink`),
//! decided from the kernel's rule, route, neighbour and link tables (read by `netlink`):
//! pure, so every case is a unit test.
//!
//! Conservative by design: any doubt (policy rules, a more specific route inside a target
//! range, a local or non-unicast route, an on-link range of many hosts, a neighbour the
//! kernel has not resolved, two next hops) keeps the kernel's IP path, which is always right.

use std::fmt;
use std::net::IpAddr;

/// The tables, as far as the decision needs them.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// Some rule other than the kernel's defaults (local, main, default) exists.
    pub custom_rules: bool,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub links: Vec<Link>,
}

/// The kernel's routing tables: local, main, default.
pub const TABLE_LOCAL: u32 = 255;
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_DEFAULT: u32 = 253;

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    pub kind: RouteKind,
    /// The destination prefix (`0.0.0.0`/`::` with length 0 for a default route).
    pub dst: IpAddr,
    pub prefix: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    /// Several next hops (`nexthop via ... nexthop via ...`).
    pub multipath: bool,
    /// The metric: the lowest wins among routes of one prefix.
    pub priority: u32,
}

/// What a route does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Unicast,
    /// Delivered to this host (its own addresses).
    Local,
    /// Broadcast, multicast, anycast, blackhole, unreachable, prohibit, ...
    Other,
}

/// One neighbour-table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub mac: Option<[u8; 6]>,
    /// Reachable, stale, delay, probe or permanent: the MAC is known.
    pub resolved: bool,
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub ethernet: bool,
}

/// Where every probe of the scan can go as a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub interface: String,
    pub mac: [u8; 6],
    /// The gateway (or the one on-link target) whose MAC it is; one per family.
    pub via: Vec<IpAddr>,
}

/// Why the kernel's IP path stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoLink {
    NoTargets,
    CustomRules,
    /// A target range holds one of this host's own (or broadcast) addresses.
    LocalTarget(IpAddr),
    NoRoute(IpAddr),
    /// A more specific route covers part of the range starting here.
    SplitRange(IpAddr),
    NotUnicast(IpAddr),
    Multipath(IpAddr),
    /// Many on-link hosts, each with its own MAC.
    OnLinkRange(IpAddr),
    /// Targets leave through two interfaces, or two next hops have two MACs.
    TwoHops,
    Unresolved(IpAddr),
    NotEthernet(u32),
}

impl fmt::Display for NoLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoLink::NoTargets => write!(f, "no targets"),
            NoLink::CustomRules => write!(f, "policy routing rules are set"),
            NoLink::LocalTarget(a) => write!(f, "the range from {a} holds this host's own address"),
            NoLink::NoRoute(a) => write!(f, "no route to {a}"),
            NoLink::SplitRange(a) => write!(f, "the range from {a} spans more than one route"),
            NoLink::NotUnicast(a) => write!(f, "the route to {a} is not unicast"),
            NoLink::Multipath(a) => write!(f, "the route to {a} has several next hops"),
            NoLink::OnLinkRange(a) => write!(f, "the range from {a} is on-link: one MAC per host"),
            NoLink::TwoHops => write!(f, "the targets have more than one next hop"),
            NoLink::Unresolved(a) => write!(f, "the neighbour table has no MAC for {a}"),
            NoLink::NotEthernet(i) => write!(f, "interface {i} is not Ethernet"),
        }
    }
}

/// An address as a number, with its family's width in bits.
fn bits(a: IpAddr) -> (u128, u32) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

/// The first and last address a route covers (as numbers), if it is of `a`'s family.
fn span(r: &Route, family_of: IpAddr) -> Option<(u128, u128)> {
    if r.dst.is_ipv4() != family_of.is_ipv4() {
        return None;
    }
    let (d, width) = bits(r.dst);
    let host_bits = width.saturating_sub(u32::from(r.prefix));
    let low_mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let net = d & !low_mask;
    Some((net, net | low_mask))
}

/// The route the kernel takes for every address of `lo..=hi`, or why there is not one.
fn route_for(t: &Tables, lo: IpAddr, hi: IpAddr) -> Result<&Route, NoLink> {
    let (l, h) = (bits(lo).0, bits(hi).0);
    let overlapping = |table: u32| {
        t.routes
            .iter()
            .filter(move |r| r.table == table && span(r, lo).is_some_and(|(n, b)| n <= h && b >= l))
    };
    if overlapping(TABLE_LOCAL).next().is_some() {
        return Err(NoLink::LocalTarget(lo));
    }
    for table in [TABLE_MAIN, TABLE_DEFAULT] {
        let best = overlapping(table)
            .filter(|r| span(r, lo).is_some_and(|(n, b)| n <= l && b >= h))
            .min_by_key(|r| (std::cmp::Reverse(r.prefix), r.priority));
        let Some(best) = best else {
            if overlapping(table).next().is_some() {
                return Err(NoLink::SplitRange(lo));
            }
            continue;
        };
        if overlapping(table).any(|r| r.prefix > best.prefix) {
            return Err(NoLink::SplitRange(lo));
        }
        // Equal-cost routes listed one by one: the kernel may spread flows over them.
        let twin = |r: &&Route| {
            (r.prefix, r.priority) == (best.prefix, best.priority)
                && (r.oif, r.gateway) != (best.oif, best.gateway)
        };
        if overlapping(table).any(|r| twin(&r)) {
            return Err(NoLink::Multipath(lo));
        }
        return Ok(best);
    }
    Err(NoLink::NoRoute(lo))
}

/// The one next hop of every target range, if the tables give one (see the module doc).
pub fn choose(
    t: &Tables,
    ranges: impl IntoIterator<Item = (IpAddr, IpAddr)>,
) -> Result<NextHop, NoLink> {
    if t.custom_rules {
        return Err(NoLink::CustomRules);
    }
    let mut oif = None;
    let mut via: Vec<IpAddr> = Vec::new();
    for (lo, hi) in ranges {
        let r = route_for(t, lo, hi)?;
        if r.kind != RouteKind::Unicast {
            return Err(NoLink::NotUnicast(lo));
        }
        if r.multipath {
            return Err(NoLink::Multipath(lo));
        }
        let out = r.oif.ok_or(NoLink::NoRoute(lo))?;
        let hop = match r.gateway {
            Some(g) => g,
            None if lo == hi => lo,
            None => return Err(NoLink::OnLinkRange(lo)),
        };
        if *oif.get_or_insert(out) != out {
            return Err(NoLink::TwoHops);
        }
        if !via.contains(&hop) {
            via.push(hop);
        }
    }
    let oif = oif.ok_or(NoLink::NoTargets)?;
    let mut mac = None;
    for &hop in &via {
        let m = t
            .neighbours
            .iter()
            .find(|n| n.ifindex == oif && n.addr == hop && n.resolved)
            .and_then(|n| n.mac)
            .ok_or(NoLink::Unresolved(hop))?;
        if *mac.get_or_insert(m) != m {
            return Err(NoLink::TwoHops);
        }
    }
    let link = t
        .links
        .iter()
        .find(|l| l.index == oif && l.ethernet)
        .ok_or(NoLink::NotEthernet(oif))?;
    Ok(NextHop {
        interface: link.name.clone(),
        mac: mac.ok_or(NoLink::NoTargets)?,
        via,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(table: u32, dst: &str, prefix: u8, gateway: Option<&str>) -> Route {
        Route {
            table,
            kind: if table == TABLE_LOCAL {
                RouteKind::Local
            } else {
                RouteKind::Unicast
            },
            dst: ip(dst),
            prefix,
            oif: Some(3),
            gateway: gateway.map(ip),
            multipath: false,
            priority: 0,
        }
    }

    fn neighbour(addr: &str, mac: [u8; 6]) -> Neighbour {
        Neighbour {
            ifindex: 3,
            addr: ip(addr),
            mac: Some(mac),
            resolved: true,
        }
    }

    /// The lab's scanner namespace: 198.18.0.1/24 on-link, 198.19.0.0/16 via 198.18.0.2,
    /// 2001:2::/64 on-link, 2001:2:1::/48-ish via 2001:2::2.
    fn lab() -> Tables {
        Tables {
            custom_rules: false,
            routes: vec![
                route(TABLE_LOCAL, "198.18.0.1", 32, None),
                route(TABLE_LOCAL, "198.18.0.255", 32, None),
                route(TABLE_MAIN, "198.18.0.0", 24, None),
                route(TABLE_MAIN, "198.19.0.0", 16, Some("198.18.0.2")),
                route(TABLE_LOCAL, "2001:2::1", 128, None),
                route(TABLE_MAIN, "2001:2::", 64, None),
                route(TABLE_MAIN, "2001:2:0:1::", 64, Some("2001:2::2")),
            ],
            neighbours: vec![neighbour("198.18.0.2", MAC), neighbour("2001:2::2", MAC)],
            links: vec![Link {
                index: 3,
                name: "lab0".into(),
                ethernet: true,
            }],
        }
    }

    fn one(lo: &str, hi: &str) -> Vec<(IpAddr, IpAddr)> {
        vec![(ip(lo), ip(hi))]
    }

    #[test]
    fn a_gateway_route_and_a_single_on_link_host_share_one_next_hop() {
        let hop = choose(&lab(), one("198.19.0.1", "198.19.0.16")).unwrap();
        assert_eq!(hop.interface, "lab0");
        assert_eq!(hop.mac, MAC);
        assert_eq!(hop.via, [ip("198.18.0.2")]);
        // The gateway itself, on-link, and hosts behind it: one hop.
        let ranges = [
            (ip("198.18.0.2"), ip("198.18.0.2")),
            (ip("198.19.0.0"), ip("198.19.255.255")),
        ];
        assert_eq!(choose(&lab(), ranges).unwrap().via, [ip("198.18.0.2")]);
        // v4 and v6 through one router: one MAC for both families.
        let ranges = [
            (ip("198.18.0.2"), ip("198.18.0.2")),
            (ip("2001:2::2"), ip("2001:2::2")),
            (ip("2001:2:0:1::5"), ip("2001:2:0:1::9")),
        ];
        let hop = choose(&lab(), ranges).unwrap();
        assert_eq!(hop.via, [ip("198.18.0.2"), ip("2001:2::2")]);
    }

    #[test]
    fn any_doubt_keeps_the_ip_path() {
        let t = lab();
        let no = |t: &Tables, lo: &str, hi: &str| choose(t, one(lo, hi)).unwrap_err();
        assert_eq!(
            no(&t, "198.18.0.2", "198.18.0.3"),
            NoLink::OnLinkRange(ip("198.18.0.2"))
        );
        assert_eq!(
            no(&t, "198.18.0.0", "198.18.0.255"),
            NoLink::LocalTarget(ip("198.18.0.0")),
            "the range holds our own address"
        );
        assert_eq!(
            no(&t, "203.0.113.1", "203.0.113.1"),
            NoLink::NoRoute(ip("203.0.113.1"))
        );
        assert_eq!(
            no(&t, "198.18.200.0", "198.19.0.5"),
            NoLink::SplitRange(ip("198.18.200.0")),
            "part of it has no route"
        );
        let mut inner = lab();
        inner
            .routes
            .push(route(TABLE_MAIN, "198.19.7.0", 24, Some("198.18.0.3")));
        assert_eq!(
            no(&inner, "198.19.0.0", "198.19.255.255"),
            NoLink::SplitRange(ip("198.19.0.0"))
        );
        assert!(choose(&inner, one("198.19.0.1", "198.19.0.16")).is_ok());
        assert_eq!(
            no(&inner, "198.19.7.1", "198.19.7.1"),
            NoLink::Unresolved(ip("198.18.0.3"))
        );
        let mut rules = lab();
        rules.custom_rules = true;
        assert_eq!(no(&rules, "198.19.0.1", "198.19.0.1"), NoLink::CustomRules);
        let mut stale = lab();
        stale.neighbours[0].resolved = false;
        assert_eq!(
            no(&stale, "198.19.0.1", "198.19.0.1"),
            NoLink::Unresolved(ip("198.18.0.2"))
        );
        let mut two = lab();
        two.neighbours[1].mac = Some([2, 0, 0, 0, 0, 9]);
        let ranges = [
            (ip("198.19.0.1"), ip("198.19.0.1")),
            (ip("2001:2:0:1::5"), ip("2001:2:0:1::5")),
        ];
        assert_eq!(choose(&two, ranges).unwrap_err(), NoLink::TwoHops);
        let mut hole = lab();
        hole.routes[3].kind = RouteKind::Other;
        assert_eq!(
            no(&hole, "198.19.0.1", "198.19.0.1"),
            NoLink::NotUnicast(ip("198.19.0.1"))
        );
        let mut multi = lab();
        multi.routes[3].multipath = true;
        assert_eq!(
            no(&multi, "198.19.0.1", "198.19.0.1"),
            NoLink::Multipath(ip("198.19.0.1"))
        );
        let mut tun = lab();
        tun.links[0].ethernet = false;
        assert_eq!(no(&tun, "198.19.0.1", "198.19.0.1"), NoLink::NotEthernet(3));
        assert_eq!(choose(&t, []).unwrap_err(), NoLink::NoTargets);
    }

    #[test]
    fn the_longest_prefix_then_the_lowest_metric_wins() {
        let mut t = lab();
        t.routes
            .push(route(TABLE_MAIN, "0.0.0.0", 0, Some("198.18.0.9")));
        // A default route covers everything, but 198.19.0.0/16 is longer.
        assert_eq!(
            choose(&t, one("198.19.0.1", "198.19.0.1")).unwrap().via,
            [ip("198.18.0.2")]
        );
        // Scanning across the /16's edge would split between two routes.
        assert_eq!(
            choose(&t, one("198.18.255.0", "198.19.0.1")).unwrap_err(),
            NoLink::SplitRange(ip("198.18.255.0"))
        );
        let mut worse = route(TABLE_MAIN, "198.19.0.0", 16, Some("198.18.0.9"));
        worse.priority = 100;
        t.routes.insert(0, worse.clone());
        assert_eq!(
            choose(&t, one("198.19.0.1", "198.19.0.1")).unwrap().via,
            [ip("198.18.0.2")],
            "metric 0 beats metric 100"
        );
        worse.priority = 0;
        t.routes.push(worse);
        assert_eq!(
            choose(&t, one("198.19.0.1", "198.19.0.1")).unwrap_err(),
            NoLink::Multipath(ip("198.19.0.1")),
            "two equal routes with two gateways"
        );
    }
}
