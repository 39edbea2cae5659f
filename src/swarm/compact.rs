//! The compact layout of a small IPv4 swarm: one exactly sized allocation of
//! 38-byte entries, seeders first, leechers in join order, and nothing else.
//!
//! Most swarms are small (a layer pulled by a handful of agents), and the full
//! [`PeerSet`] spends a hash table and four vectors on each. Here a lookup is a
//! scan of at most [`COMPACT_MAX`] ids in a few cache lines, the locality is
//! rebuilt from the address and the zone, and a membership change reallocates
//! the slice (a re-announce, the common case, changes nothing but the entry).
//! A swarm outgrowing the layout, or seeing an IPv6 peer, moves to full sets.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::locality::{Locality, Topology};
use super::peers::{
    Candidates, JoinKey, LEECHERS, PeerSet, Removed, SEEDERS, Slot, earlier_seq, join_key,
    saturating_u32,
};
use super::transfer::Reported;
use crate::bittorrent::PeerId;

/// Most peers a compact swarm holds; one more moves it to full sets.
pub(super) const COMPACT_MAX: usize = 16;

/// `expiry` bits: the peer seeds.
const SEEDER: u32 = 1 << 31;
/// `expiry` bits: the peer's completed download was counted.
const COMPLETED: u32 = 1 << 30;
/// `expiry` bits: engine seconds at which the peer is dropped (34 years of range).
const SECONDS: u32 = COMPLETED - 1;

/// One peer in 38 bytes: id, address, zone, expiry with two flags, its
/// last reported transfer totals, and its join sequence number. Every field
/// is 2-byte aligned, so five entries fill 190 bytes of jemalloc's
/// 192-byte class (4-byte fields would pad each entry to 40, and five to
/// the 224-byte class: 6.4 bytes more per peer in the commonest swarm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: PeerId,
    /// The IPv4 address, octets in network order.
    ip: [u8; 4],
    port: u16,
    zone: u16,
    /// See [`expiry`]: native byte order.
    expiry: [u8; 4],
    reported: Reported,
    /// Its place in the swarm's join sequence ([`JoinKey`]). A swarm whose
    /// numbers outgrow 16 bits uses full sets.
    join_seq: u16,
}

impl Entry {
    fn word(&self) -> u32 {
        u32::from_ne_bytes(self.expiry)
    }

    fn seeder(&self) -> bool {
        self.word() & SEEDER != 0
    }

    fn completed(&self) -> bool {
        self.word() & COMPLETED != 0
    }

    fn expires_at(&self) -> u32 {
        self.word() & SECONDS
    }

    fn ip(&self) -> u32 {
        u32::from_be_bytes(self.ip)
    }

    fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.ip), self.port)
    }

    fn key(&self) -> JoinKey {
        join_key(u32::from(self.join_seq), &self.id)
    }
}

/// Flags and expiry packed into an entry's expiry word.
fn expiry(seeder: bool, completed: bool, expires_at: u32) -> [u8; 4] {
    let mut word = expires_at.min(SECONDS);
    if seeder {
        word |= SEEDER;
    }
    if completed {
        word |= COMPLETED;
    }
    word.to_ne_bytes()
}

/// A small IPv4 peer set; see the module comment.
#[derive(Debug, Default)]
pub(super) struct CompactSet {
    /// Seeders first, then leechers.
    entries: Box<[Entry]>,
}

/// What an upsert did, or that the set is full and the peer did not fit.
pub(super) enum Upsert {
    /// Listed at `position`; `first` when this announce is the peer's first
    /// completed download; `prior_expires_at` is the expiry its previous
    /// announce set (0 for a newcomer).
    Done {
        first: bool,
        position: usize,
        prior_expires_at: u32,
    },
    /// A new peer and the set already holds [`COMPACT_MAX`], or a join
    /// sequence number past 16 bits: move to full sets first.
    Full,
}

impl CompactSet {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn position(&self, id: &PeerId) -> Option<usize> {
        position_of(&self.entries, id)
    }

    /// The listed peer with this id: address, seeder, completed, expiry, join sequence number.
    pub(super) fn get(&self, id: &PeerId) -> Option<(SocketAddrV4, bool, bool, u32, u32)> {
        let entry = self.entries.get(self.position(id)?)?;
        Some((
            entry.addr(),
            entry.seeder(),
            entry.completed(),
            entry.expires_at(),
            u32::from(entry.join_seq),
        ))
    }

    /// Whether the peer with this id is listed.
    pub(super) fn contains(&self, id: &PeerId) -> bool {
        self.position(id).is_some()
    }

    /// When `ip` already lists `limit` peers or more, removes its entry that
    /// expires first (its oldest announce); returns whether it did.
    pub(super) fn evict_oldest_of(&mut self, ip: Ipv4Addr, limit: usize) -> bool {
        let ip = u32::from(ip);
        let mut count = 0;
        let mut oldest: Option<(u32, usize)> = None;
        for (position, entry) in self.entries.iter().enumerate() {
            if entry.ip() == ip {
                count += 1;
                if oldest.is_none_or(|(at, _)| entry.expires_at() < at) {
                    oldest = Some((entry.expires_at(), position));
                }
            }
        }
        match oldest {
            Some((_, position)) if count >= limit => {
                self.remove_at(position);
                true
            }
            _ => false,
        }
    }

    /// Checks that seeders come first and the leechers are in join order.
    #[cfg(test)]
    pub(super) fn check_order(&self) {
        let seeders = self.seeders();
        assert!(!self.entries[seeders..].iter().any(Entry::seeder));
        let keys: Vec<JoinKey> = self.entries[seeders..].iter().map(Entry::key).collect();
        assert!(
            keys.is_sorted(),
            "a compact set's leechers out of join order"
        );
    }

    #[cfg(test)]
    fn has_completed(&self, id: &PeerId) -> bool {
        self.position(id)
            .is_some_and(|position| self.entries[position].completed())
    }

    /// Inserts or refreshes a peer, as [`PeerSet::upsert`] does.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upsert(
        &mut self,
        id: PeerId,
        addr: SocketAddrV4,
        zone: u16,
        seeder: bool,
        expires_at: u32,
        completing: bool,
        join_seq: u32,
    ) -> Upsert {
        let listed_at = self.position(&id);
        if listed_at.is_none() && self.len() >= COMPACT_MAX {
            return Upsert::Full;
        }
        // A newcomer numbered past 16 bits (by another instance, or next
        // here) needs full sets; a listed peer keeps a number that fits.
        let join_seq = match listed_at {
            Some(position) => earlier_seq(join_seq, u32::from(self.entries[position].join_seq)),
            None if join_seq == 0 => self.next_seq(),
            None => join_seq,
        };
        let Ok(join_seq) = u16::try_from(join_seq) else {
            return Upsert::Full;
        };
        let mut entry = Entry {
            id,
            ip: addr.ip().octets(),
            port: addr.port(),
            zone,
            expiry: [0; 4],
            reported: Reported::UNKNOWN,
            join_seq,
        };
        let prior_expires_at = listed_at.map_or(0, |position| self.entries[position].expires_at());
        if let Some(position) = listed_at {
            let listed = self.entries[position];
            entry.reported = listed.reported;
            // A listed peer keeps the lower number; a leecher whose number
            // moves lower changes rank, so it is re-filed below.
            if listed.seeder() == seeder && (seeder || entry.join_seq == listed.join_seq) {
                entry.expiry = expiry(seeder, listed.completed() || completing, expires_at);
                self.entries[position] = entry;
                return Upsert::Done {
                    first: completing && !listed.completed(),
                    position,
                    prior_expires_at,
                };
            }
        }
        // A newcomer, a role change (a leecher that finished counts as a
        // completion), or a leecher that joined earlier than this set knew:
        // file it on its side of the seeder boundary, leechers in join
        // order, with one reallocation at most.
        let mut entries = std::mem::take(&mut self.entries).into_vec();
        let counted_before = listed_at.is_some_and(|position| entries.remove(position).completed());
        let finished = completing || (listed_at.is_some() && seeder);
        entry.expiry = expiry(seeder, counted_before || finished, expires_at);
        let at = if seeder {
            entries.partition_point(Entry::seeder)
        } else {
            let key = entry.key();
            match entries.last() {
                Some(last) if !last.seeder() && last.key() > key => {
                    let seeders = entries.partition_point(Entry::seeder);
                    seeders + entries[seeders..].partition_point(|listed| listed.key() < key)
                }
                _ => entries.len(),
            }
        };
        entries.reserve_exact(1);
        entries.insert(at, entry);
        self.entries = entries.into_boxed_slice();
        Upsert::Done {
            first: finished && !counted_before,
            position: at,
            prior_expires_at,
        }
    }

    /// The number a newcomer gets: one past the highest listed. The set
    /// keeps no counter, so a number can come back after every holder of it
    /// left.
    fn next_seq(&self) -> u32 {
        self.entries
            .iter()
            .map(|listed| u32::from(listed.join_seq))
            .max()
            .map_or(1, |highest| highest + 1)
    }

    /// Removes a peer, as [`PeerSet::remove`] does.
    pub(super) fn remove(&mut self, id: &PeerId, finished: bool) -> Option<Removed> {
        let removed = self.remove_at(self.position(id)?);
        Some(Removed {
            first_completion: finished && !removed.seeder() && !removed.completed(),
            reported: removed.reported,
        })
    }

    /// Replaces the last reported totals of the peer at `position` (from
    /// [`Upsert::Done`]); returns the ones it replaces.
    pub(super) fn exchange_reported(&mut self, position: usize, reported: Reported) -> Reported {
        self.entries
            .get_mut(position)
            .map_or(Reported::UNKNOWN, |entry| {
                std::mem::replace(&mut entry.reported, reported)
            })
    }

    fn remove_at(&mut self, position: usize) -> Entry {
        let mut entries = std::mem::take(&mut self.entries).into_vec();
        // `remove`, not `swap_remove`: the order keeps seeders first.
        let removed = entries.remove(position);
        self.entries = entries.into_boxed_slice();
        removed
    }

    /// Removes expired peers; returns how many.
    pub(super) fn purge(&mut self, now_secs: u32) -> usize {
        let before = self.len();
        if self.entries.iter().any(|e| e.expires_at() <= now_secs) {
            let mut entries = std::mem::take(&mut self.entries).into_vec();
            entries.retain(|e| e.expires_at() > now_secs);
            self.entries = entries.into_boxed_slice();
        }
        before - self.len()
    }

    /// The set as handout candidates, localities rebuilt with `topology`.
    pub(super) fn candidates<'s>(&'s self, topology: &'s Topology) -> CompactCandidates<'s> {
        CompactCandidates {
            entries: &self.entries,
            seeders: self.seeders(),
            topology,
        }
    }

    /// Calls `f(seeder, addr, id, expires_at, completed, join_seq)` for every peer.
    pub(super) fn for_each(&self, mut f: impl FnMut(bool, SocketAddrV4, &PeerId, u32, bool, u32)) {
        for entry in self.entries.iter() {
            f(
                entry.seeder(),
                entry.addr(),
                &entry.id,
                entry.expires_at(),
                entry.completed(),
                u32::from(entry.join_seq),
            );
        }
    }

    pub(super) fn seeders(&self) -> usize {
        self.entries.partition_point(Entry::seeder)
    }

    pub(super) fn leechers(&self) -> usize {
        self.len() - self.seeders()
    }

    /// The same peers as a full set.
    pub(super) fn to_full(&self, topology: &Topology) -> PeerSet<SocketAddrV4> {
        let mut set = PeerSet::default();
        for entry in self.entries.iter() {
            let (_, slot, _) = set.upsert(
                entry.id,
                entry.addr(),
                topology.v4_locality(entry.ip(), entry.zone),
                entry.seeder(),
                entry.expires_at(),
                // A new entry marked completing is listed as counted.
                entry.completed(),
                u32::from(entry.join_seq),
            );
            set.exchange_reported(slot, entry.reported);
        }
        set
    }

    /// The same peers in the compact layout, if they fit (at most
    /// [`COMPACT_MAX`] of them, every join sequence number within 16 bits).
    pub(super) fn from_full(set: &PeerSet<SocketAddrV4>) -> Option<Self> {
        if set.len() > COMPACT_MAX {
            return None;
        }
        let mut entries = Vec::with_capacity(set.len());
        let mut fits = true;
        set.for_each_reported(
            |seeder, addr, locality, id, expires_at, completed, join_seq, reported| {
                let Ok(join_seq) = u16::try_from(join_seq) else {
                    fits = false;
                    return;
                };
                entries.push(Entry {
                    id: *id,
                    ip: addr.ip().octets(),
                    port: addr.port(),
                    zone: locality.zone,
                    expiry: expiry(seeder, completed, expires_at),
                    reported,
                    join_seq,
                });
            },
        );
        if !fits {
            return None;
        }
        // `for_each` yields seeders first, and leechers in join order (a
        // set without an index keeps them so).
        Some(Self {
            entries: entries.into_boxed_slice(),
        })
    }
}

fn position_of(entries: &[Entry], id: &PeerId) -> Option<usize> {
    entries.iter().position(|entry| entry.id == *id)
}

/// A compact set seen as handout candidates.
pub(super) struct CompactCandidates<'s> {
    entries: &'s [Entry],
    seeders: usize,
    topology: &'s Topology,
}

impl CompactCandidates<'_> {
    /// The slot of the entry at `position` (seeders first, then leechers).
    pub(super) fn slot(&self, position: usize) -> Slot {
        match position.checked_sub(self.seeders) {
            None => Slot::new(SEEDERS, saturating_u32(position)),
            Some(leecher) => Slot::new(LEECHERS, saturating_u32(leecher)),
        }
    }

    fn entry(&self, slot: Slot) -> &Entry {
        let position = match slot.role() {
            SEEDERS => slot.index() as usize,
            _ => self.seeders + slot.index() as usize,
        };
        &self.entries[position]
    }
}

impl Candidates for CompactCandidates<'_> {
    fn seeders(&self) -> usize {
        self.seeders
    }

    fn leechers(&self) -> usize {
        self.entries.len() - self.seeders
    }

    fn find(&self, id: &PeerId) -> Option<Slot> {
        position_of(self.entries, id).map(|position| self.slot(position))
    }

    fn locality(&self, slot: Slot) -> Locality {
        let entry = self.entry(slot);
        self.topology.v4_locality(entry.ip(), entry.zone)
    }

    fn addr(&self, slot: Slot) -> SocketAddr {
        SocketAddr::V4(self.entry(slot).addr())
    }

    fn peer_id(&self, slot: Slot) -> PeerId {
        self.entry(slot).id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> PeerId {
        PeerId([n; 20])
    }

    fn addr(n: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, n, 1), 6881)
    }

    #[test]
    fn an_entry_is_38_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 38);
    }

    #[test]
    fn seeders_stay_first_through_joins_role_changes_and_leaves() {
        let mut set = CompactSet::default();
        for n in 0..10 {
            let seeder = n % 3 == 0;
            assert!(matches!(
                set.upsert(id(n), addr(n), 0, seeder, 100, false, 0),
                Upsert::Done { first: false, .. }
            ));
        }
        assert_eq!((set.seeders(), set.leechers()), (4, 6));
        // A leecher finishing counts once and moves to the seeders.
        assert!(matches!(
            set.upsert(id(1), addr(1), 0, true, 100, false, 0),
            Upsert::Done { first: true, .. }
        ));
        assert!(matches!(
            set.upsert(id(1), addr(1), 0, true, 100, true, 0),
            Upsert::Done { first: false, .. }
        ));
        assert!(
            set.remove(&id(0), false)
                .is_some_and(|r| !r.first_completion)
        );
        assert_eq!((set.seeders(), set.leechers()), (4, 5));
        let seeders = set.seeders();
        assert!(set.entries[..seeders].iter().all(Entry::seeder));
        assert!(!set.entries[seeders..].iter().any(Entry::seeder));
        // A stopping leecher with nothing left counts as finished.
        assert!(set.remove(&id(2), true).is_some_and(|r| r.first_completion));
    }

    /// Leechers stay in join order whatever order they are listed in, and a
    /// number past 16 bits sends the swarm to full sets, which keep it.
    #[test]
    fn leechers_keep_join_order_and_big_numbers_go_to_full_sets() {
        let mut set = CompactSet::default();
        for (n, join_seq) in [(1, 7), (2, 3), (3, 0), (4, 5), (5, 3)] {
            set.upsert(id(n), addr(n), 0, false, 100, false, join_seq);
        }
        let order: Vec<(u8, u16)> = set
            .entries
            .iter()
            .map(|e| (e.id.0[0], e.join_seq))
            .collect();
        // 3 came unnumbered: one past the highest (7). 2 and 5 tie: by id.
        assert_eq!(order, [(2, 3), (5, 3), (4, 5), (1, 7), (3, 8)]);
        // A lower number from elsewhere moves a listed leecher up; a higher
        // one changes nothing.
        set.upsert(id(3), addr(3), 0, false, 100, false, 4);
        set.upsert(id(2), addr(2), 0, false, 100, false, 9);
        let order: Vec<u8> = set.entries.iter().map(|e| e.id.0[0]).collect();
        assert_eq!(order, [2, 5, 3, 4, 1]);
        assert!(matches!(
            set.upsert(id(9), addr(9), 0, false, 100, false, 70_000),
            Upsert::Full
        ));
        let mut full = set.to_full(&Topology::default());
        full.upsert(
            id(9),
            addr(9),
            Locality::default(),
            false,
            100,
            false,
            70_000,
        );
        assert!(
            CompactSet::from_full(&full).is_none(),
            "70,000 needs 17 bits"
        );
        full.remove(&id(9), false);
        let back = CompactSet::from_full(&full).expect("fits again");
        assert_eq!(back.entries, set.entries);
        // Unnumbered, next after 65,535 is past 16 bits too.
        let mut high = CompactSet::default();
        high.upsert(id(1), addr(1), 0, false, 100, false, u32::from(u16::MAX));
        assert!(matches!(
            high.upsert(id(2), addr(2), 0, false, 100, false, 0),
            Upsert::Full
        ));
    }

    #[test]
    fn a_full_set_refuses_a_newcomer_but_refreshes_members() {
        let mut set = CompactSet::default();
        for n in 0..COMPACT_MAX as u8 {
            set.upsert(id(n), addr(n), 0, false, 100, false, 0);
        }
        assert!(matches!(
            set.upsert(id(200), addr(200), 0, false, 100, false, 0),
            Upsert::Full
        ));
        assert!(matches!(
            set.upsert(id(3), addr(9), 0, false, 200, false, 0),
            Upsert::Done { first: false, .. }
        ));
        assert_eq!(set.len(), COMPACT_MAX);
    }

    #[test]
    fn expiry_keeps_flags_apart_and_purge_drops_the_old() {
        let mut set = CompactSet::default();
        set.upsert(id(1), addr(1), 0, true, 50, true, 0);
        set.upsert(id(2), addr(2), 0, false, 150, false, 0);
        set.upsert(id(3), addr(3), 0, false, u32::MAX, false, 0);
        assert!(set.has_completed(&id(1)));
        assert_eq!(set.purge(100), 1);
        assert_eq!(set.len(), 2);
        assert!(!set.has_completed(&id(1)));
        assert_eq!(set.purge(SECONDS - 1), 1);
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn full_and_compact_convert_both_ways_keeping_everything() {
        let topology = Topology::default();
        let mut set = CompactSet::default();
        for n in 0..12u8 {
            set.upsert(id(n), addr(n), 0, n % 4 == 0, 100 + u32::from(n), n == 4, 0);
        }
        let full = set.to_full(&topology);
        assert_eq!(full.len(), 12);
        assert!(full.has_completed(&id(4)) && !full.has_completed(&id(8)));
        let back = CompactSet::from_full(&full).expect("fits");
        let sorted = |s: &CompactSet| {
            let mut e = s.entries.to_vec();
            e.sort_by_key(|e| e.id.0);
            e
        };
        assert_eq!(sorted(&back), sorted(&set));
        assert_eq!(back.seeders(), set.seeders());
    }
}
