//! Where a peer sits in the network, and how near two peers are.
//!
//! A [`Topology`] turns an address into a [`Locality`] once per announce:
//! the subnet from a prefix length, the zone and region from the operator's
//! sites (longest prefix wins). Handouts then compare small integers only.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::bittorrent::Tier;

/// A peer's place in the network, as small ids that compare in one instruction.
///
/// `zone` and `region` are 0 when no site covers the address: unknown never
/// matches unknown, so unmapped peers only share a subnet tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Locality {
    /// The address masked to the subnet prefix (IPv6 prefixes folded to 32 bits).
    pub subnet: u32,
    /// The site's (region, zone) pair, numbered from 1; 0 = unknown.
    pub zone: u16,
    /// The site's region, numbered from 1; 0 = unknown.
    pub region: u16,
}

impl Locality {
    /// How near `peer` is to `self` (the announcer).
    #[inline]
    pub fn tier_of(&self, peer: &Locality) -> Tier {
        if peer.subnet == self.subnet {
            Tier::Subnet
        } else if self.zone != 0 && peer.zone == self.zone {
            Tier::Zone
        } else if self.region != 0 && peer.region == self.region {
            Tier::Region
        } else {
            Tier::Other
        }
    }
}

/// Peers handed out per tier, for the locality hit ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierCounts(pub [u64; 4]);

impl TierCounts {
    /// The count for one tier.
    pub fn get(&self, tier: Tier) -> u64 {
        self.0[tier as usize]
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &TierCounts) {
        for (sum, n) in self.0.iter_mut().zip(other.0) {
            *sum += n;
        }
    }
}

/// How handouts use locality. The default is swarmgate's: tiers with both guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoutPolicy {
    /// Fill by tier (subnet, zone, region, other); `false` hands out uniformly at random.
    pub tiers: bool,
    /// Guard 1: every reply to a leecher holds at least this many seeders,
    /// nearest first, when the swarm has them (0 disables).
    pub seeder_guard: usize,
    /// Guard 2: this percentage of the slots goes to tiers beyond the
    /// nearest ones that could fill the reply, so groups stay connected (0 disables).
    pub spill_percent: u8,
    /// Guard 3: only the first this many leechers of a region (in join
    /// sequence order, the same on every instance of a cluster), and those
    /// `bridgehead_every` picks after them, take links to other regions;
    /// the rest are handed no far peers and are handed to no far announcer,
    /// unless their download stalled (0 disables).
    pub bridgeheads: usize,
    /// Past the first `bridgeheads`, one leecher in this many of a region
    /// links regions too (0: none past the first). Entry points in
    /// proportion help clients that fetch the rarest pieces first; clients
    /// that fetch in order (the agent) pull the same pieces across again.
    pub bridgehead_every: usize,
}

impl Default for HandoutPolicy {
    fn default() -> Self {
        Self {
            tiers: true,
            seeder_guard: 2,
            spill_percent: 15,
            bridgeheads: 1,
            bridgehead_every: 0,
        }
    }
}

impl HandoutPolicy {
    /// Uniformly random handout, no locality: the baseline.
    pub const RANDOM: HandoutPolicy = HandoutPolicy {
        tiers: false,
        seeder_guard: 0,
        spill_percent: 0,
        bridgeheads: 0,
        bridgehead_every: 0,
    };

    /// Nearest tiers first with no guards: the strict preference that starves groups.
    pub const STRICT: HandoutPolicy = HandoutPolicy {
        tiers: true,
        seeder_guard: 0,
        spill_percent: 0,
        bridgeheads: 0,
        bridgehead_every: 0,
    };
}

/// One site of the operator's topology, in terms independent of the config format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSpec {
    /// Network address of the site.
    pub network: IpAddr,
    /// Prefix length of the site.
    pub prefix_len: u8,
    /// Zone name; zones are told apart per region.
    pub zone: String,
    /// Region name.
    pub region: String,
}

/// Why a topology cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// A prefix longer than the address.
    #[error("prefix /{prefix_len} is longer than an {family} address")]
    PrefixTooLong {
        /// The prefix length given.
        prefix_len: u8,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// More distinct zones or regions than the ids hold.
    #[error("more than 65,535 distinct zones or regions")]
    TooManySites,
}

/// Sites of one prefix length: masked network → (zone, region) ids.
type SitesOfLength<K> = (u8, HashMap<K, (u16, u16)>);

/// Resolves addresses to localities: subnet prefixes plus the operator's sites.
#[derive(Debug, Clone)]
pub struct Topology {
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    /// Sites by prefix length, longest first, each a map from masked network to ids.
    v4_sites: Vec<SitesOfLength<u32>>,
    v6_sites: Vec<SitesOfLength<u128>>,
    zone_names: Vec<String>,
    region_names: Vec<String>,
    /// Each zone's region, by zone id - 1: a zone lies in exactly one region.
    zone_regions: Vec<u16>,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            v4_sites: Vec::new(),
            v6_sites: Vec::new(),
            zone_names: Vec::new(),
            region_names: Vec::new(),
            zone_regions: Vec::new(),
        }
    }
}

impl Topology {
    /// A topology with subnet prefixes and sites; the longest matching site wins.
    pub fn new(
        ipv4_prefix: u8,
        ipv6_prefix: u8,
        sites: &[SiteSpec],
    ) -> Result<Self, TopologyError> {
        check_prefix(ipv4_prefix, false)?;
        check_prefix(ipv6_prefix, true)?;
        let mut topology = Self {
            ipv4_prefix,
            ipv6_prefix,
            ..Self::default()
        };
        let mut zones: HashMap<(String, String), u16> = HashMap::new();
        let mut regions: HashMap<String, u16> = HashMap::new();
        for site in sites {
            let len = site.prefix_len;
            check_prefix(len, site.network.is_ipv6())?;
            let region = intern(
                &mut regions,
                &mut topology.region_names,
                site.region.clone(),
                &site.region,
            )?;
            // Zones are told apart per region: "a" of two regions are two zones.
            let zone = intern(
                &mut zones,
                &mut topology.zone_names,
                (site.region.clone(), site.zone.clone()),
                &site.zone,
            )?;
            if usize::from(zone) > topology.zone_regions.len() {
                topology.zone_regions.push(region);
            }
            match site.network {
                IpAddr::V4(ip) => {
                    let key = u32::from(ip) & mask32(len);
                    by_length(&mut topology.v4_sites, len).insert(key, (zone, region));
                }
                IpAddr::V6(ip) => {
                    let key = u128::from(ip) & mask128(len);
                    by_length(&mut topology.v6_sites, len).insert(key, (zone, region));
                }
            }
        }
        topology
            .v4_sites
            .sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        topology
            .v6_sites
            .sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        Ok(topology)
    }

    /// Where `ip` sits. IPv4-mapped IPv6 addresses are treated as IPv4.
    pub fn locate(&self, ip: IpAddr) -> Locality {
        match ip {
            IpAddr::V4(ip) => self.locate_v4(u32::from(ip)),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => self.locate_v4(u32::from(v4)),
                None => {
                    let bits = u128::from(ip);
                    let masked = bits & mask128(self.ipv6_prefix);
                    // Fold the prefix into 32 bits; a collision between two
                    // subnets of one swarm only makes them share a tier.
                    let folded = (masked >> 96) as u32
                        ^ (masked >> 64) as u32
                        ^ (masked >> 32) as u32
                        ^ masked as u32;
                    let (zone, region) = site_of(&self.v6_sites, |len| bits & mask128(len));
                    Locality {
                        subnet: folded,
                        zone,
                        region,
                    }
                }
            },
        }
    }

    fn locate_v4(&self, bits: u32) -> Locality {
        let (zone, region) = site_of(&self.v4_sites, |len| bits & mask32(len));
        Locality {
            subnet: bits & mask32(self.ipv4_prefix),
            zone,
            region,
        }
    }

    /// The locality of the IPv4 address `ip` that was filed under `zone`: the
    /// subnet and region follow from those two, so compact peer storage keeps
    /// only the zone.
    pub(crate) fn v4_locality(&self, ip: u32, zone: u16) -> Locality {
        let region = usize::from(zone)
            .checked_sub(1)
            .and_then(|i| self.zone_regions.get(i))
            .copied()
            .unwrap_or(0);
        Locality {
            subnet: ip & mask32(self.ipv4_prefix),
            zone,
            region,
        }
    }

    /// The zone's name for a locality's zone id, if known.
    pub fn zone_name(&self, zone: u16) -> Option<&str> {
        self.zone_names
            .get(usize::from(zone).checked_sub(1)?)
            .map(String::as_str)
    }

    /// The region's name for a locality's region id, if known.
    pub fn region_name(&self, region: u16) -> Option<&str> {
        self.region_names
            .get(usize::from(region).checked_sub(1)?)
            .map(String::as_str)
    }
}

fn check_prefix(prefix_len: u8, ipv6: bool) -> Result<(), TopologyError> {
    let (bits, family) = if ipv6 { (128, "IPv6") } else { (32, "IPv4") };
    if prefix_len > bits {
        return Err(TopologyError::PrefixTooLong { prefix_len, family });
    }
    Ok(())
}

/// The id of `key`, numbered from 1 in order of first appearance; `name` is
/// what `zone_name`/`region_name` give back for it.
fn intern<K: std::hash::Hash + Eq>(
    ids: &mut HashMap<K, u16>,
    names: &mut Vec<String>,
    key: K,
    name: &str,
) -> Result<u16, TopologyError> {
    if let Some(&id) = ids.get(&key) {
        return Ok(id);
    }
    names.push(name.to_string());
    let id = u16::try_from(names.len()).map_err(|_| TopologyError::TooManySites)?;
    ids.insert(key, id);
    Ok(id)
}

/// The (zone, region) of the longest site prefix that `masked(len)` finds.
fn site_of<K: std::hash::Hash + Eq>(
    levels: &[SitesOfLength<K>],
    masked: impl Fn(u8) -> K,
) -> (u16, u16) {
    levels
        .iter()
        .find_map(|(len, map)| map.get(&masked(*len)).copied())
        .unwrap_or((0, 0))
}

fn by_length<K>(levels: &mut Vec<SitesOfLength<K>>, len: u8) -> &mut HashMap<K, (u16, u16)> {
    let position = match levels.iter().position(|(l, _)| *l == len) {
        Some(position) => position,
        None => {
            levels.push((len, HashMap::new()));
            levels.len() - 1
        }
    };
    &mut levels[position].1
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(cidr: &str, zone: &str, region: &str) -> SiteSpec {
        let (network, len) = cidr.split_once('/').expect("cidr");
        SiteSpec {
            network: network.parse().expect("ip"),
            prefix_len: len.parse().expect("len"),
            zone: zone.into(),
            region: region.into(),
        }
    }

    #[test]
    fn longest_prefix_wins_and_unknown_never_matches_unknown() {
        let topology = Topology::new(
            24,
            64,
            &[
                site("10.0.0.0/8", "wide", "eu"),
                site("10.1.0.0/16", "a", "us"),
                site("10.1.2.0/24", "b", "us"),
                site("2001:db8::/32", "a", "us"),
            ],
        )
        .expect("topology");
        let wide = topology.locate("10.9.9.9".parse().expect("ip"));
        let a = topology.locate("10.1.9.9".parse().expect("ip"));
        let b = topology.locate("10.1.2.3".parse().expect("ip"));
        let b2 = topology.locate("10.1.2.200".parse().expect("ip"));
        let v6 = topology.locate("2001:db8::1".parse().expect("ip"));
        let nowhere = topology.locate("192.0.2.1".parse().expect("ip"));
        let nowhere2 = topology.locate("198.51.100.1".parse().expect("ip"));
        assert_eq!(topology.zone_name(wide.zone), Some("wide"));
        assert_eq!(topology.region_name(wide.region), Some("eu"));
        assert_eq!(topology.zone_name(a.zone), Some("a"));
        assert_eq!(topology.zone_name(b.zone), Some("b"));
        assert_eq!(b.tier_of(&b2), Tier::Subnet);
        assert_eq!(a.tier_of(&b), Tier::Region, "zones a and b share region us");
        assert_eq!(
            a.tier_of(&v6),
            Tier::Zone,
            "zone a of region us, either family"
        );
        assert_eq!(a.tier_of(&wide), Tier::Other);
        assert_eq!((nowhere.zone, nowhere.region), (0, 0));
        assert_eq!(nowhere.tier_of(&nowhere2), Tier::Other);
        assert_eq!(
            topology.locate("::ffff:10.1.2.3".parse().expect("ip")),
            b,
            "IPv4-mapped addresses locate as IPv4"
        );
    }

    #[test]
    fn a_v4_locality_rebuilds_from_address_and_zone() {
        let topology = Topology::new(
            24,
            64,
            &[
                site("10.1.0.0/16", "a", "east"),
                site("10.2.0.0/16", "b", "east"),
                site("10.3.0.0/16", "a", "west"),
                site("10.3.9.0/24", "c", "west"),
            ],
        )
        .expect("topology");
        for ip in [
            "10.1.2.3",
            "10.2.200.1",
            "10.3.4.5",
            "10.3.9.9",
            "192.0.2.7",
        ] {
            let ip: std::net::Ipv4Addr = ip.parse().expect("ip");
            let located = topology.locate(IpAddr::V4(ip));
            assert_eq!(
                topology.v4_locality(u32::from(ip), located.zone),
                located,
                "{ip}"
            );
        }
    }

    #[test]
    fn subnets_follow_the_prefix_lengths() {
        let topology = Topology::new(16, 48, &[]).expect("topology");
        let one = topology.locate("10.1.2.3".parse().expect("ip"));
        let two = topology.locate("10.1.200.3".parse().expect("ip"));
        let three = topology.locate("10.2.2.3".parse().expect("ip"));
        assert_eq!(one.tier_of(&two), Tier::Subnet);
        assert_eq!(one.tier_of(&three), Tier::Other);
        let v6a = topology.locate("2001:db8:1:1::1".parse().expect("ip"));
        let v6b = topology.locate("2001:db8:1:2::1".parse().expect("ip"));
        let v6c = topology.locate("2001:db8:2:1::1".parse().expect("ip"));
        assert_eq!(v6a.tier_of(&v6b), Tier::Subnet);
        assert_eq!(v6a.tier_of(&v6c), Tier::Other);
        let everything = Topology::new(0, 0, &[]).expect("topology");
        assert_eq!(
            everything
                .locate("1.2.3.4".parse().expect("ip"))
                .tier_of(&everything.locate("9.8.7.6".parse().expect("ip"))),
            Tier::Subnet
        );
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(Topology::new(33, 64, &[]).is_err());
        assert!(Topology::new(24, 129, &[]).is_err());
        assert!(Topology::new(24, 64, &[site("10.0.0.0/40", "z", "r")]).is_err());
    }
}
