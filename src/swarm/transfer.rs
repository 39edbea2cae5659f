//! What peers say they transferred: the `uploaded` and `downloaded` totals
//! every announce carries, turned into per-peer increases, summed per shard,
//! and per busy swarm, so an operator can see how much of the layer traffic
//! the swarm took off the registry (the offload).
//!
//! A peer's last report costs 4 bytes: each total is kept as a 16-bit code,
//! a float with a 6-bit exponent and a 10-bit mantissa, rounded down.
//! Increases are taken between codes, so they telescope: all a peer ever
//! adds is its last code minus its first, short of the truth by less than
//! 1/1024 of its final report, and the rounding never accumulates per
//! announce.
//!
//! A client's totals are its own to lie about. What the tracker guards is
//! everything else: a total that goes down is a client restart (counted from
//! zero), an increase past [`IMPLAUSIBLE`] in one announce is not counted,
//! and every sum saturates instead of wrapping.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::bittorrent::InfoHash;

/// One announce may add at most this much per direction (1 TiB: a
/// 100 Gbit/s link for 88 s, far past a layer between two announces);
/// past it the report is a lie or garbage and adds nothing.
pub const IMPLAUSIBLE: u64 = 1 << 40;

/// Bits of a code's mantissa.
const MANTISSA_BITS: u32 = 10;
const MANTISSA: u64 = 1 << MANTISSA_BITS;

/// A total as a 16-bit code, rounded down: exact below 2,048 (11
/// significant bits: the leading one and the mantissa), then within
/// 1/1,024. Codes order as the totals do, so comparing codes compares
/// totals.
fn encode(total: u64) -> u16 {
    if total < MANTISSA {
        return total as u16;
    }
    let bits = u64::BITS - total.leading_zeros();
    let exponent = bits - MANTISSA_BITS;
    let mantissa = (total >> (exponent - 1)) & (MANTISSA - 1);
    // exponent <= 54, so the code stays below 56,320 and never meets UNKNOWN.
    ((exponent << MANTISSA_BITS) as u16) | mantissa as u16
}

/// The smallest total with this code.
fn decode(code: u16) -> u64 {
    let exponent = u32::from(code) >> MANTISSA_BITS;
    let mantissa = u64::from(code) & (MANTISSA - 1);
    if exponent == 0 {
        mantissa
    } else {
        (MANTISSA | mantissa) << (exponent - 1)
    }
}

/// A peer's last reported totals, in 4 bytes; see the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reported {
    uploaded: u16,
    downloaded: u16,
}

impl Reported {
    /// Nothing known yet: the next report is a baseline and adds nothing.
    /// Peers restored from a snapshot or another instance start here, so a
    /// total counted before (there) is never counted again (here).
    pub(super) const UNKNOWN: Self = Self {
        uploaded: u16::MAX,
        downloaded: u16::MAX,
    };

    /// The totals an announce reports.
    pub(super) fn new(uploaded: u64, downloaded: u64) -> Self {
        Self {
            uploaded: encode(uploaded),
            downloaded: encode(downloaded),
        }
    }

    fn is_known(self) -> bool {
        self != Self::UNKNOWN
    }

    /// The later of two reports of one client (a dual-stack client is
    /// listed once per address family, and each family's announce carries
    /// the same running totals): the larger codes, or whichever is known.
    pub(super) fn latest(self, other: Self) -> Self {
        match (self.is_known(), other.is_known()) {
            (true, true) => Self {
                uploaded: self.uploaded.max(other.uploaded),
                downloaded: self.downloaded.max(other.downloaded),
            },
            (true, false) => self,
            _ => other,
        }
    }

    /// Whether a leecher's download stood still between the `prior` report
    /// and this one (within the codes' 1/1,024); unknown is not standing.
    pub(super) fn stalled_since(self, prior: Self) -> bool {
        self.is_known() && prior.is_known() && self.downloaded <= prior.downloaded
    }

    /// What this report adds to the `prior` one.
    pub(super) fn since(self, prior: Self) -> Increase {
        let mut increase = Increase::default();
        if !prior.is_known() || !self.is_known() {
            return increase;
        }
        let (uploaded, up_reset, up_lie) = added(self.uploaded, prior.uploaded);
        let (downloaded, down_reset, down_lie) = added(self.downloaded, prior.downloaded);
        increase.uploaded = uploaded;
        increase.downloaded = downloaded;
        increase.resets = u64::from(up_reset) + u64::from(down_reset);
        increase.implausible = u64::from(up_lie) + u64::from(down_lie);
        increase
    }
}

/// What one total's code `now` adds to `before`, whether it went down (a
/// restart: counted from zero), and whether the increase was implausible
/// (then nothing is counted).
fn added(now: u16, before: u16) -> (u64, bool, bool) {
    let reset = now < before;
    let bytes = if reset {
        decode(now)
    } else {
        decode(now) - decode(before)
    };
    if bytes > IMPLAUSIBLE {
        (0, reset, true)
    } else {
        (bytes, reset, false)
    }
}

/// What one announce added to a peer's reported totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Increase {
    pub(super) uploaded: u64,
    pub(super) downloaded: u64,
    /// Totals that went down (a client restarted under the same peer id).
    pub(super) resets: u64,
    /// Increases past [`IMPLAUSIBLE`], not counted.
    pub(super) implausible: u64,
}

impl Increase {
    /// Whether there is anything to count.
    pub(super) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Reported traffic summed over announces: bytes peers received, and bytes
/// peers sent, split by whether the sender is an origin (see [`Origins`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferTotals {
    /// Bytes peers say they received, from peers and web seeds alike.
    pub downloaded: u64,
    /// Bytes peers that are not origins say they sent: the swarm's own work.
    pub uploaded_by_peers: u64,
    /// Bytes origins (the registry's own seeders) say they sent.
    pub uploaded_by_origins: u64,
    /// Reported totals that went down: client restarts, counted from zero.
    pub resets: u64,
    /// Reported increases past [`IMPLAUSIBLE`], not counted.
    pub implausible: u64,
}

impl TransferTotals {
    /// Counts one announce's increase; `origin` says who sent what it uploaded.
    pub(super) fn add(&mut self, increase: &Increase, origin: bool) {
        self.downloaded = self.downloaded.saturating_add(increase.downloaded);
        let sent = if origin {
            &mut self.uploaded_by_origins
        } else {
            &mut self.uploaded_by_peers
        };
        *sent = sent.saturating_add(increase.uploaded);
        self.resets = self.resets.saturating_add(increase.resets);
        self.implausible = self.implausible.saturating_add(increase.implausible);
    }

    /// Adds another tally (another shard's).
    pub fn merge(&mut self, other: &Self) {
        self.downloaded = self.downloaded.saturating_add(other.downloaded);
        self.uploaded_by_peers = self
            .uploaded_by_peers
            .saturating_add(other.uploaded_by_peers);
        self.uploaded_by_origins = self
            .uploaded_by_origins
            .saturating_add(other.uploaded_by_origins);
        self.resets = self.resets.saturating_add(other.resets);
        self.implausible = self.implausible.saturating_add(other.implausible);
    }

    /// The offload: the share of what peers received that other peers (not
    /// origins, not web seeds) sent, from 0 to 1; `None` before any traffic.
    ///
    /// What peers received is the larger of the two sides' reports. Clients
    /// report `downloaded` as verified payload (libtorrent leaves out the
    /// few percent of pieces fetched twice near the end) but `uploaded` as
    /// every byte sent, so with no web seed the senders' side is the larger
    /// and the truer; a web seed never reports, so with one the receivers'
    /// side is. Reports arrive at each peer's own announces, so a swarm
    /// mid-transfer can read high or low; it settles once its peers have
    /// announced again.
    pub fn offload(&self) -> Option<f64> {
        let sent = self
            .uploaded_by_peers
            .saturating_add(self.uploaded_by_origins);
        let received = self.downloaded.max(sent);
        (received > 0).then(|| self.uploaded_by_peers as f64 / received as f64)
    }
}

/// The networks whose peers are origins: the registry's own seeders, whose
/// uploads are what the swarm is meant to save. Web seeds need no entry:
/// they never announce, so their bytes appear only as peers' downloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(Vec<IpNet>);

impl Origins {
    /// Origins in these networks.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// Whether `ip` is an origin (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|network| network.contains(&ip))
    }
}

/// How many swarms each shard keeps figures for; see [`BusiestSwarms`].
pub(super) const BUSIEST_PER_SHARD: usize = 16;

/// One swarm's reported traffic as [`crate::swarm::Engine::busiest_swarms`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusySwarm {
    /// The torrent.
    pub info_hash: InfoHash,
    /// What its peers reported while it was tracked.
    pub totals: TransferTotals,
    /// Up to this many of the bytes it is ranked by may belong to swarms it
    /// replaced in the table (zero: its figures are complete since tracking began).
    pub error_bytes: u64,
    /// Engine seconds at which tracking began.
    pub tracked_since: u32,
    /// What it is ranked by: reported bytes, both directions, plus `error_bytes`.
    pub weight: u64,
}

/// The busiest swarms of one shard by reported bytes, in a fixed table:
/// the Space-Saving algorithm (Metwally, Agrawal and El Abbadi, 2005). A
/// swarm not in a full table replaces the lightest one and inherits its
/// weight as an error bound, so any swarm carrying more than 1/16 of the
/// shard's reported bytes is always listed. The table never grows: per-swarm
/// counters for every swarm would cost bytes per peer in every small swarm.
#[derive(Debug, Default)]
pub(super) struct BusiestSwarms {
    entries: Vec<BusySwarm>,
}

impl BusiestSwarms {
    /// Counts one announce's increase to `info_hash`.
    pub(super) fn add(
        &mut self,
        info_hash: &InfoHash,
        increase: &Increase,
        origin: bool,
        now_secs: u32,
    ) {
        let bytes = increase.uploaded.saturating_add(increase.downloaded);
        if bytes == 0 {
            return;
        }
        let at = match self.entries.iter().position(|e| e.info_hash == *info_hash) {
            Some(at) => at,
            None if self.entries.len() < BUSIEST_PER_SHARD => {
                self.entries.push(BusySwarm::new(*info_hash, 0, now_secs));
                self.entries.len() - 1
            }
            None => {
                let (at, lightest) = self
                    .entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.weight)
                    .map(|(at, e)| (at, e.weight))
                    .unwrap_or_default();
                self.entries[at] = BusySwarm::new(*info_hash, lightest, now_secs);
                at
            }
        };
        let entry = &mut self.entries[at];
        entry.weight = entry.weight.saturating_add(bytes);
        entry.totals.add(increase, origin);
    }

    /// The tracked swarms, in no order.
    pub(super) fn entries(&self) -> &[BusySwarm] {
        &self.entries
    }
}

impl BusySwarm {
    fn new(info_hash: InfoHash, inherited: u64, now_secs: u32) -> Self {
        Self {
            info_hash,
            totals: TransferTotals::default(),
            error_bytes: inherited,
            tracked_since: now_secs,
            weight: inherited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_are_exact_below_2048_and_never_collide_with_unknown() {
        for total in 0..2 * MANTISSA {
            assert_eq!(decode(encode(total)), total);
        }
        assert_eq!(decode(encode(2 * MANTISSA + 1)), 2 * MANTISSA);
        assert!(encode(u64::MAX) < u16::MAX);
        assert!(Reported::new(u64::MAX, u64::MAX).is_known());
    }

    proptest! {
        #[test]
        fn a_code_rounds_down_by_less_than_a_1024th(total in any::<u64>()) {
            let back = decode(encode(total));
            prop_assert!(back <= total);
            prop_assert!(total - back <= total / 1024);
        }

        #[test]
        fn codes_order_as_totals_do(a in any::<u64>(), b in any::<u64>()) {
            if a <= b {
                prop_assert!(encode(a) <= encode(b));
            }
        }

        /// Summed increases of a growing total equal its last code minus its
        /// first, however it is sampled: rounding does not accumulate.
        #[test]
        fn increases_telescope(mut steps in proptest::collection::vec(0u64..1 << 36, 1..50)) {
            let mut total = 0u64;
            let mut prior = Reported::new(0, 0);
            let mut counted = 0u64;
            for step in steps.drain(..) {
                total += step;
                let now = Reported::new(total, total / 2);
                let increase = now.since(prior);
                prop_assert_eq!(increase.resets, 0);
                counted += increase.uploaded;
                prior = now;
            }
            prop_assert_eq!(counted, decode(encode(total)));
            prop_assert!(total - counted <= total / 1024);
        }
    }

    #[test]
    fn an_unknown_prior_is_a_baseline() {
        let increase = Reported::new(5 << 20, 7 << 20).since(Reported::UNKNOWN);
        assert!(increase.is_empty());
    }

    #[test]
    fn a_total_that_goes_down_is_a_restart_counted_from_zero() {
        let prior = Reported::new(900, 50_000);
        let increase = Reported::new(100, 60_000).since(prior);
        assert_eq!(increase.resets, 1);
        assert_eq!(increase.uploaded, 100);
        assert_eq!(
            increase.downloaded,
            decode(encode(60_000)) - decode(encode(50_000))
        );
    }

    #[test]
    fn implausible_increases_count_nothing_and_nothing_overflows() {
        let increase = Reported::new(u64::MAX, 10).since(Reported::new(0, 0));
        assert_eq!(increase.implausible, 1);
        assert_eq!((increase.uploaded, increase.downloaded), (0, 10));
        let mut totals = TransferTotals {
            downloaded: u64::MAX - 1,
            ..TransferTotals::default()
        };
        totals.add(
            &Increase {
                downloaded: IMPLAUSIBLE,
                uploaded: IMPLAUSIBLE,
                ..Increase::default()
            },
            false,
        );
        assert_eq!(totals.downloaded, u64::MAX);
        assert_eq!(totals.offload(), Some(IMPLAUSIBLE as f64 / u64::MAX as f64));
        // Senders reporting more than receivers: the senders' side counts.
        let swarm_only = TransferTotals {
            downloaded: 90,
            uploaded_by_peers: 75,
            uploaded_by_origins: 25,
            ..TransferTotals::default()
        };
        assert_eq!(swarm_only.offload(), Some(0.75));
        // A web seed's bytes show only as downloads: the receivers' side counts.
        let web_seeded = TransferTotals {
            downloaded: 200,
            uploaded_by_peers: 50,
            ..TransferTotals::default()
        };
        assert_eq!(web_seeded.offload(), Some(0.25));
        assert_eq!(TransferTotals::default().offload(), None);
    }

    #[test]
    fn latest_takes_the_larger_known_report() {
        let v4 = Reported::new(100, 5_000);
        let v6 = Reported::new(300, 4_000);
        assert_eq!(v4.latest(v6), Reported::new(300, 5_000));
        assert_eq!(v4.latest(Reported::UNKNOWN), v4);
        assert_eq!(Reported::UNKNOWN.latest(v6), v6);
    }

    #[test]
    fn origins_match_their_networks_and_mapped_addresses() {
        let origins = Origins::new(vec![
            "10.0.0.0/24".parse().expect("literal"),
            "fd00::/64".parse().expect("literal"),
        ]);
        assert!(origins.contains("10.0.0.9".parse().expect("literal")));
        assert!(origins.contains("::ffff:10.0.0.9".parse().expect("literal")));
        assert!(origins.contains("fd00::1".parse().expect("literal")));
        assert!(!origins.contains("10.0.1.9".parse().expect("literal")));
        assert!(!Origins::default().contains("10.0.0.9".parse().expect("literal")));
    }

    fn hash(n: u8) -> InfoHash {
        InfoHash([n; 20])
    }

    fn bytes(downloaded: u64) -> Increase {
        Increase {
            downloaded,
            ..Increase::default()
        }
    }

    #[test]
    fn the_table_keeps_every_heavy_swarm_and_bounds_its_error() {
        let mut table = BusiestSwarms::default();
        // Two heavy swarms among 200 light ones, interleaved.
        for round in 0..20u64 {
            for light in 0..10u8 {
                table.add(
                    &hash(10 + light + 10 * (round as u8 % 19)),
                    &bytes(1),
                    false,
                    0,
                );
            }
            table.add(&hash(1), &bytes(1_000), false, 0);
            table.add(&hash(2), &bytes(500), true, 0);
        }
        assert_eq!(table.entries().len(), BUSIEST_PER_SHARD);
        let heavy = |n| {
            table
                .entries()
                .iter()
                .find(|e| e.info_hash == hash(n))
                .copied()
        };
        let first = heavy(1).expect("the heaviest swarm is listed");
        assert_eq!(first.totals.downloaded + first.error_bytes, first.weight);
        assert!(first.totals.downloaded >= 19_000, "{first:?}");
        assert!(heavy(2).is_some());
        // Every weight bounds the truth from above by at most its error.
        for entry in table.entries() {
            assert!(entry.weight >= entry.totals.downloaded);
        }
    }

    #[test]
    fn a_table_entry_is_80_bytes() {
        // docs/offload.md: 128 shards x 16 entries = 160 KiB.
        assert_eq!(std::mem::size_of::<BusySwarm>(), 80);
    }

    #[test]
    fn nothing_reported_touches_nothing() {
        let mut table = BusiestSwarms::default();
        table.add(&hash(1), &Increase::default(), false, 0);
        assert!(table.entries().is_empty());
    }
}
