//! One address family's peers in one swarm (the full layout; the smallest
//! swarms use [`compact`](super::compact) instead), a locality index for big
//! swarms, and the handout that fills a reply tier by tier from either layout
//! through the [`Candidates`] trait.
//!
//! Seeders and leechers live in two dense vectors so that a random index is a
//! random peer. Sets below the index threshold carry no index: a handout
//! classifies their candidates in one pass over contiguous memory.
//! Once a set grows past [`INDEX_BUILD`] peers it keeps, per role, a list of
//! members for every subnet, zone and region present, maintained on every
//! insert and removal, so a handout in a 100,000-peer swarm walks only the
//! announcer's groups.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::LazyLock;

use foldhash::fast::{FixedState, RandomState};
use hashbrown::HashTable;
use rand::Rng;

use super::locality::{HandoutPolicy, Locality};
use super::sample::Walk;
use super::transfer::Reported;
use crate::bittorrent::Tier;
use crate::bittorrent::{HandoutPeer, PeerId};

type FastMap<K, V> = HashMap<K, V, RandomState>;

/// A set this large gets a locality index.
pub(super) const INDEX_BUILD: usize = 192;
/// A set this small drops its index again (hysteresis, so sets at the
/// threshold do not rebuild on every join and leave).
pub(super) const INDEX_DROP: usize = 96;
/// Most seeders one reply reserves for the seeder guard.
const MAX_GUARD: usize = 8;

pub(super) const SEEDERS: usize = 0;
pub(super) const LEECHERS: usize = 1;
const NO_LINK: u32 = u32::MAX;
/// The region's level in [`level_keys`] and the index's groups.
const REGION_LEVEL: usize = 2;
/// Region ids a small set's classify pass counts leechers of for the
/// bridgehead guard; leechers of regions numbered past it are never hidden.
const FAR_REGIONS: usize = 64;

/// Peers of one family.
pub(super) struct PeerSet<A> {
    /// Where each peer's entry is, found by hashing its id. The table stores
    /// only the 4-byte slot and compares ids in the entries, so a peer id is
    /// kept once, not once in a map key and again in the entry.
    slots: HashTable<Slot>,
    /// `roles[SEEDERS]` and `roles[LEECHERS]`.
    roles: [Role<A>; 2],
    index: Option<Box<LocalityIndex>>,
    /// The join sequence number the next newcomer gets: one past the
    /// highest this set has held.
    next_seq: u32,
}

impl<A> Default for PeerSet<A> {
    fn default() -> Self {
        Self {
            slots: HashTable::new(),
            roles: [Role::default(), Role::default()],
            index: None,
            next_seq: 1,
        }
    }
}

/// Where a peer's entry is: which role (top bit), which index (the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot(u32);

impl Slot {
    const ROLE_BIT: u32 = 1 << 31;

    pub(super) fn new(role: usize, index: u32) -> Self {
        debug_assert!(index < Self::ROLE_BIT, "more than 2^31 peers in one set");
        Self(if role == LEECHERS {
            index | Self::ROLE_BIT
        } else {
            index
        })
    }

    pub(super) fn role(self) -> usize {
        if self.0 & Self::ROLE_BIT == 0 {
            SEEDERS
        } else {
            LEECHERS
        }
    }

    pub(super) fn index(self) -> u32 {
        self.0 & !Self::ROLE_BIT
    }
}

/// One process-wide hasher for peer ids: a per-set seed would cost 8 bytes
/// in every swarm, and a seed chosen at start still keeps ids from being
/// crafted to collide ahead of time.
static ID_HASHER: LazyLock<FixedState> =
    LazyLock::new(|| FixedState::with_seed(RandomState::default().hash_one(0u64)));

fn hash_id(id: &PeerId) -> u64 {
    ID_HASHER.hash_one(id)
}

/// One role's peers in two parallel columns, split by who reads them: a
/// handout probes dozens of random peers and needs only where each is, so
/// those 16 bytes (IPv4) sit apart from the id and bookkeeping. In a big
/// swarm that is four peers per cache line instead of one and a half.
struct Role<A> {
    places: Vec<Place<A>>,
    records: Vec<Record>,
}

impl<A> Default for Role<A> {
    fn default() -> Self {
        Self {
            places: Vec::new(),
            records: Vec::new(),
        }
    }
}

impl<A> Role<A> {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn push(&mut self, place: Place<A>, record: Record) {
        self.places.push(place);
        self.records.push(record);
    }

    fn swap_remove(&mut self, position: usize) -> (Place<A>, Record) {
        (
            self.places.swap_remove(position),
            self.records.swap_remove(position),
        )
    }
}

/// Where a peer is: what a handout reads.
struct Place<A> {
    addr: A,
    locality: Locality,
}

/// Who a peer is and when it goes: what announces and expiry read. 32
/// bytes: the completed flag shares a word with the expiry.
struct Record {
    id: PeerId,
    /// Engine seconds at which the peer is dropped (the low 31 bits), and
    /// whether its completed download was already counted ([`COUNTED`]).
    expiry: u32,
    /// Its last reported transfer totals.
    reported: Reported,
    /// Its place in the set's join sequence; see [`JoinKey`].
    join_seq: u32,
}

/// `Record::expiry` bit: the peer's completed download was counted.
const COUNTED: u32 = 1 << 31;

impl Record {
    fn new(
        id: PeerId,
        expires_at: u32,
        completed: bool,
        reported: Reported,
        join_seq: u32,
    ) -> Self {
        let mut record = Self {
            id,
            expiry: 0,
            reported,
            join_seq,
        };
        record.set_expiry(expires_at, completed);
        record
    }

    fn expires_at(&self) -> u32 {
        self.expiry & !COUNTED
    }

    fn completed(&self) -> bool {
        self.expiry & COUNTED != 0
    }

    fn set_expiry(&mut self, expires_at: u32, completed: bool) {
        self.expiry = expires_at.min(!COUNTED) | if completed { COUNTED } else { 0 };
    }

    fn key(&self) -> JoinKey {
        join_key(self.join_seq, &self.id)
    }
}

/// The order a region's leechers rank in for the bridgehead guard: each
/// peer's join sequence number, then its id.
///
/// A set numbers a newcomer one past the highest number it ever held (a
/// Lamport clock per swarm): one instance numbers its joiners in the order
/// they came, a peer carries its number to every instance and snapshot, and
/// an instance that hears of a peer late ranks it where it joined. Two
/// instances that number different newcomers alike before hearing of each
/// other tie, and the id breaks the tie the same way everywhere. Every
/// instance holding the same peers ranks them alike. No clock is read.
pub(super) type JoinKey = (u32, [u8; 20]);

/// The join sequence number a listed peer keeps when `incoming` (0: none
/// given) meets the `listed` one: the lower, so every instance settles on
/// the number of the instance that listed the peer first.
pub(super) fn earlier_seq(incoming: u32, listed: u32) -> u32 {
    if incoming == 0 {
        listed
    } else {
        incoming.min(listed)
    }
}

/// The [`JoinKey`] of a peer.
pub(super) fn join_key(join_seq: u32, id: &PeerId) -> JoinKey {
    (join_seq, id.0)
}

/// What removing a peer found.
pub(super) struct Removed {
    /// It was an uncounted leecher that has finished: its download counts now.
    pub(super) first_completion: bool,
    /// Its last reported transfer totals.
    pub(super) reported: Reported,
}

/// Per role and level (subnet, zone, region): group key → indexes of members.
pub(super) struct LocalityIndex {
    groups: [[FastMap<u32, Vec<u32>>; 3]; 2],
    /// Per role, parallel to the entries: each entry's position in its three groups.
    links: [Vec<[u32; 3]>; 2],
}

/// The group keys of a locality per level; `None` for an unknown zone or region.
fn level_keys(locality: &Locality) -> [Option<u32>; 3] {
    [
        Some(locality.subnet),
        (locality.zone != 0).then_some(u32::from(locality.zone)),
        (locality.region != 0).then_some(u32::from(locality.region)),
    ]
}

/// Whether a group keeps its members in [`JoinKey`] order: a region's
/// leechers, whose place in the group is their bridgehead rank. Every other
/// group is a bag (removal swaps the last member into the gap).
fn ordered(role: usize, level: usize) -> bool {
    role == LEECHERS && level == REGION_LEVEL
}

impl LocalityIndex {
    fn build<A>(roles: &[Role<A>; 2]) -> Self {
        let mut index = Self {
            groups: Default::default(),
            links: [Vec::new(), Vec::new()],
        };
        for (role, peers) in roles.iter().enumerate() {
            let key_of = |member: u32| peers.records[member as usize].key();
            for (position, place) in peers.places.iter().enumerate() {
                index.insert(role, saturating_u32(position), &place.locality, key_of);
            }
        }
        index
    }

    /// Links entry `position` (the last of its role) into its groups;
    /// `key_of` gives any entry's [`JoinKey`], for the ordered groups. A
    /// newcomer sorts last (it joined now), so the search runs only for a
    /// peer another instance listed earlier.
    fn insert(
        &mut self,
        role: usize,
        position: u32,
        locality: &Locality,
        key_of: impl Fn(u32) -> JoinKey,
    ) {
        let Self { groups, links } = self;
        let mut link = [NO_LINK; 3];
        for (level, key) in level_keys(locality).into_iter().enumerate() {
            let Some(key) = key else { continue };
            let members = groups[role][level].entry(key).or_default();
            let mut at = members.len();
            if ordered(role, level) {
                let own = key_of(position);
                if members.last().is_some_and(|&last| key_of(last) > own) {
                    at = members.partition_point(|&member| key_of(member) < own);
                    for &later in &members[at..] {
                        links[role][later as usize][level] += 1;
                    }
                }
            }
            link[level] = saturating_u32(at);
            members.insert(at, position);
        }
        links[role].push(link);
    }

    /// Unlinks entry `position`, then records that the role's last entry
    /// (`last`, with `last_locality`) moves into `position`, as `swap_remove` does.
    fn remove(
        &mut self,
        role: usize,
        position: u32,
        locality: &Locality,
        last: u32,
        last_locality: &Locality,
    ) {
        let link = self.links[role][position as usize];
        for (level, key) in level_keys(locality).into_iter().enumerate() {
            let (Some(key), at) = (key, link[level]) else {
                continue;
            };
            let groups = &mut self.groups[role][level];
            let Some(members) = groups.get_mut(&key) else {
                continue;
            };
            if ordered(role, level) {
                // Keeps the later members' ranks: each moves up one.
                members.remove(at as usize);
                for &later in &members[at as usize..] {
                    self.links[role][later as usize][level] -= 1;
                }
            } else {
                members.swap_remove(at as usize);
                if let Some(&moved) = members.get(at as usize) {
                    self.links[role][moved as usize][level] = at;
                }
            }
            if members.is_empty() {
                groups.remove(&key);
            }
        }
        if last != position {
            let last_link = self.links[role][last as usize];
            for (level, key) in level_keys(last_locality).into_iter().enumerate() {
                if let Some(slot) = key
                    .and_then(|key| self.groups[role][level].get_mut(&key))
                    .and_then(|members| members.get_mut(last_link[level] as usize))
                {
                    *slot = position;
                }
            }
        }
        self.links[role].swap_remove(position as usize);
    }

    /// The entry's place among the members of its role in its region, in
    /// [`JoinKey`] order for leechers; `None` when its region is unknown.
    fn region_rank(&self, role: usize, position: u32) -> Option<u32> {
        let link = self.links[role].get(position as usize)?[REGION_LEVEL];
        (link != NO_LINK).then_some(link)
    }

    fn group(&self, role: usize, level: usize, key: Option<u32>) -> &[u32] {
        key.and_then(|key| self.groups[role][level].get(&key))
            .map_or(&[], Vec::as_slice)
    }
}

/// Who is asking, as the handout needs it.
pub(super) struct Announcer<'a> {
    pub id: &'a PeerId,
    pub locality: Locality,
    /// A seeder is handed leechers only.
    pub to_seeder: bool,
    /// Whether the reply carries peer ids; reading them costs one more
    /// memory access per peer handed out, so only non-compact replies do.
    pub with_ids: bool,
    /// A listed leecher whose reported download did not grow since its last
    /// announce: the bridgehead guard lets it reach other regions, so a
    /// region whose bridgeheads are stuck heals at its next announces.
    pub stalled: bool,
}

/// Peer storage a handout can walk: peers addressed by role and index, the
/// seeders and the leechers each numbered from 0. Implemented by the full
/// [`PeerSet`] and by the compact layout of small swarms.
pub(super) trait Candidates {
    /// Seeders listed.
    fn seeders(&self) -> usize;
    /// Leechers listed.
    fn leechers(&self) -> usize;
    /// Where the peer with this id is listed.
    fn find(&self, id: &PeerId) -> Option<Slot>;
    /// The locality of the peer at `slot`.
    fn locality(&self, slot: Slot) -> Locality;
    /// The address of the peer at `slot`.
    fn addr(&self, slot: Slot) -> SocketAddr;
    /// The id of the peer at `slot`.
    fn peer_id(&self, slot: Slot) -> PeerId;
    /// The per-group member lists, when the storage keeps them.
    fn locality_index(&self) -> Option<&LocalityIndex> {
        None
    }

    /// Calls `f` with the locality of the first `seeders` seeders, then of
    /// every leecher, in slot order: one pass for a handout to classify.
    fn each_locality(&self, seeders: usize, mut f: impl FnMut(Locality)) {
        for index in 0..seeders {
            f(self.locality(Slot::new(SEEDERS, saturating_u32(index))));
        }
        for index in 0..self.leechers() {
            f(self.locality(Slot::new(LEECHERS, saturating_u32(index))));
        }
    }

    /// How many peers a handout could offer this announcer at most; `own` is
    /// where the announcer is listed here, if it is.
    fn available(&self, who: &Announcer<'_>, own: Option<Slot>) -> usize {
        let seeders = if who.to_seeder { 0 } else { self.seeders() };
        let own = own.is_some_and(|slot| !(who.to_seeder && slot.role() == SEEDERS));
        seeders + self.leechers() - usize::from(own)
    }
}

/// Candidates for one tier, as a sequence a [`Walk`] can index.
enum Seq<'a> {
    /// Positions into the concatenated candidates (seeders first, `seeders` of them).
    Bucket { positions: &'a [u8], seeders: usize },
    /// Members of the announcer's zone or region in each role (nearer peers included).
    Groups {
        seeders: &'a [u32],
        leechers: &'a [u32],
    },
    /// Members of the announcer's subnet in each role: all of them subnet tier,
    /// since the tier test compares the same subnet key.
    Subnet {
        seeders: &'a [u32],
        leechers: &'a [u32],
    },
    /// Every entry of each role (the first `seeders` positions are seeders).
    All { seeders: usize, leechers: usize },
}

impl Seq<'_> {
    fn len(&self) -> usize {
        match self {
            Seq::Bucket { positions, .. } => positions.len(),
            Seq::Groups { seeders, leechers } | Seq::Subnet { seeders, leechers } => {
                seeders.len() + leechers.len()
            }
            Seq::All { seeders, leechers } => seeders + leechers,
        }
    }

    /// The (role, index) at sequence position `k < len`.
    fn at(&self, k: usize) -> (usize, u32) {
        match self {
            Seq::Bucket { positions, seeders } => {
                let position = usize::from(positions[k]);
                match position.checked_sub(*seeders) {
                    None => (SEEDERS, saturating_u32(position)),
                    Some(leecher) => (LEECHERS, saturating_u32(leecher)),
                }
            }
            Seq::Groups { seeders, leechers } | Seq::Subnet { seeders, leechers } => {
                match k.checked_sub(seeders.len()) {
                    None => (SEEDERS, seeders[k]),
                    Some(leecher) => (LEECHERS, leechers[leecher]),
                }
            }
            Seq::All { seeders, .. } => match k.checked_sub(*seeders) {
                None => (SEEDERS, saturating_u32(k)),
                Some(leecher) => (LEECHERS, saturating_u32(leecher)),
            },
        }
    }

    /// Whether every candidate of the sequence already has the tier it is walked for.
    fn exact(&self) -> bool {
        matches!(self, Seq::Bucket { .. } | Seq::Subnet { .. })
    }
}

/// Per region id, how many of its leechers a classify pass has met so far
/// (region ids are numbered from 1 in the order the sites name them).
struct FarRegions([u32; FAR_REGIONS]);

impl FarRegions {
    /// How many leechers of `region` came before this one; 0 (a bridgehead)
    /// for a region numbered past the table.
    #[inline]
    fn rank(&mut self, region: u16) -> usize {
        match self.0.get_mut(usize::from(region)) {
            Some(count) => {
                *count += 1;
                *count as usize - 1
            }
            None => 0,
        }
    }
}

/// Without an index, candidates classified by tier in one pass: positions fit a byte.
struct Buckets {
    /// Per tier, seeders' positions first, then leechers'.
    positions: [[u8; INDEX_BUILD]; 4],
    lens: [usize; 4],
    /// Per tier, how many of the positions are seeders (the guard walks only those).
    seeder_lens: [usize; 4],
    /// Candidate positions below this are seeders.
    seeders: usize,
}

/// What one handout looks at: the set, the announcer, and (small sets) its candidates by tier.
struct Handout<'s, 'a, S> {
    set: &'s S,
    who: &'s Announcer<'a>,
    own: Option<Slot>,
    buckets: Option<Buckets>,
    /// The bridgehead guard: leechers of a region past this rank get no far
    /// peers and are no far peer (0: no guard).
    bridgeheads: usize,
    /// And one in this many past them (0: none).
    bridgehead_every: usize,
    /// The announcer is a leecher past its region's bridgeheads: no far tier.
    far_closed: bool,
    /// Walks of an indexed set skip far leechers past their bridgeheads (a
    /// small set's classify pass leaves them out of its buckets).
    hide_far: bool,
}

/// Where each tier's walk stands, and which seeders the guard picked.
#[derive(Default)]
struct Progress {
    walks: [Option<Walk>; 4],
    guard_walks: [Option<Walk>; 4],
    guard_picks: GuardPicks,
}

/// The seeders the guard handed out, so the tier fill does not hand them again.
#[derive(Default)]
struct GuardPicks {
    indexes: [u32; MAX_GUARD],
    len: usize,
}

impl GuardPicks {
    fn contains(&self, index: u32) -> bool {
        self.indexes[..self.len].contains(&index)
    }

    fn push(&mut self, index: u32) {
        if let Some(slot) = self.indexes.get_mut(self.len) {
            *slot = index;
            self.len += 1;
        }
    }
}

impl<A: Copy + Into<SocketAddr>> PeerSet<A> {
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn seeders(&self) -> usize {
        self.roles[SEEDERS].len()
    }

    pub(super) fn leechers(&self) -> usize {
        self.roles[LEECHERS].len()
    }

    /// The slot of the peer with this id.
    fn find(&self, id: &PeerId) -> Option<Slot> {
        let roles = &self.roles;
        self.slots
            .find(hash_id(id), |slot| {
                roles[slot.role()].records[slot.index() as usize].id == *id
            })
            .copied()
    }

    /// The listed peer with this id: address, seeder, completed, expiry, join sequence number.
    pub(super) fn get(&self, id: &PeerId) -> Option<(A, bool, bool, u32, u32)> {
        let slot = self.find(id)?;
        let peers = &self.roles[slot.role()];
        let position = slot.index() as usize;
        let record = &peers.records[position];
        Some((
            peers.places[position].addr,
            slot.role() == SEEDERS,
            record.completed(),
            record.expires_at(),
            record.join_seq,
        ))
    }

    /// Whether the peer with this id is listed.
    pub(super) fn contains(&self, id: &PeerId) -> bool {
        self.find(id).is_some()
    }

    /// When `ip` already lists `limit` peers or more, removes its entry that
    /// expires first (its oldest announce); returns whether it did. An
    /// indexed set walks only the members of `subnet` (the address's own),
    /// so the cost is bounded by that group, not by the swarm.
    pub(super) fn evict_oldest_of(
        &mut self,
        ip: std::net::IpAddr,
        subnet: u32,
        limit: usize,
    ) -> bool {
        let mut count = 0;
        let mut oldest: Option<(u32, Slot)> = None;
        let mut consider = |role: usize, index: u32| {
            let peers = &self.roles[role];
            if peers.places[index as usize].addr.into().ip() == ip {
                count += 1;
                let expires_at = peers.records[index as usize].expires_at();
                if oldest.is_none_or(|(at, _)| expires_at < at) {
                    oldest = Some((expires_at, Slot::new(role, index)));
                }
            }
        };
        for role in [SEEDERS, LEECHERS] {
            match &self.index {
                Some(index) => index
                    .group(role, 0, Some(subnet))
                    .iter()
                    .for_each(|&member| consider(role, member)),
                None => (0..saturating_u32(self.roles[role].len()))
                    .for_each(|member| consider(role, member)),
            }
        }
        match oldest {
            Some((_, slot)) if count >= limit => {
                self.remove_slot(slot);
                true
            }
            _ => false,
        }
    }

    /// Whether the locality index is built (for tests and memory accounting).
    #[cfg(test)]
    pub(super) fn is_indexed(&self) -> bool {
        self.index.is_some()
    }

    #[cfg(test)]
    pub(super) fn has_completed(&self, id: &PeerId) -> bool {
        self.find(id)
            .is_some_and(|slot| self.roles[slot.role()].records[slot.index() as usize].completed())
    }

    /// Inserts or refreshes a peer; returns whether this announce is the peer's
    /// first completed download (a `completed` event, or a listed leecher
    /// turning seeder: clients that finish and re-announce with `left=0`),
    /// where the peer is now listed, and the expiry its previous announce set
    /// (0 for a newcomer). `join_seq` is the peer's join sequence number
    /// as another instance or a snapshot numbered it, or 0 (an announce
    /// here, or not known): a newcomer without one is numbered next, and a
    /// listed peer keeps the lower of both, so instances that each saw it
    /// join first agree once they have heard of each other.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upsert(
        &mut self,
        id: PeerId,
        addr: A,
        locality: Locality,
        seeder: bool,
        expires_at: u32,
        completing: bool,
        join_seq: u32,
    ) -> (bool, Slot, u32) {
        let role = if seeder { SEEDERS } else { LEECHERS };
        let mut prior_expires_at = 0;
        let mut counted_before = false;
        let mut reported = Reported::UNKNOWN;
        let mut finished = completing;
        let mut join_seq = join_seq;
        if let Some(slot) = self.find(&id) {
            let peers = &mut self.roles[slot.role()];
            let position = slot.index() as usize;
            let listed_seq = peers.records[position].join_seq;
            join_seq = earlier_seq(join_seq, listed_seq);
            // A seeder's number ranks nothing: it can change in place.
            if slot.role() == role
                && peers.places[position].locality == locality
                && (role == SEEDERS || join_seq == listed_seq)
            {
                peers.places[position].addr = addr;
                let record = &mut peers.records[position];
                let prior_expires_at = record.expires_at();
                let first = completing && !record.completed();
                record.set_expiry(expires_at, record.completed() || completing);
                record.join_seq = join_seq;
                return (first, slot, prior_expires_at);
            }
            // Role changed (leecher finished, or a seeder lost data), the
            // peer moved to another network, or it joined earlier than this
            // set knew: re-file it.
            let was_seeder = slot.role() == SEEDERS;
            let (_, removed) = self.remove_slot(slot);
            prior_expires_at = removed.expires_at();
            counted_before = removed.completed();
            reported = removed.reported;
            finished |= seeder && !was_seeder;
        }
        if join_seq == 0 {
            join_seq = self.next_seq;
        }
        self.next_seq = self.next_seq.max(join_seq.saturating_add(1));
        let record = Record::new(
            id,
            expires_at,
            counted_before || finished,
            reported,
            join_seq,
        );
        let peers = &mut self.roles[role];
        let mut index = saturating_u32(peers.len());
        if role == LEECHERS && self.index.is_none() {
            // A small set keeps its leechers in join order (the classify
            // pass ranks them by position); a newcomer goes last.
            let key = record.key();
            let at = match peers.records.last() {
                Some(last) if last.key() > key => {
                    peers.records.partition_point(|listed| listed.key() < key)
                }
                _ => peers.len(),
            };
            peers.places.insert(at, Place { addr, locality });
            peers.records.insert(at, record);
            // Each later leecher moved up one: re-point its slot, from the
            // last down, so no two slots ever hold the same value.
            for later in (at + 1..peers.len()).rev() {
                let was = Slot::new(LEECHERS, saturating_u32(later - 1));
                let moved = hash_id(&peers.records[later].id);
                if let Some(slot) = self.slots.find_mut(moved, |s| *s == was) {
                    *slot = Slot::new(LEECHERS, saturating_u32(later));
                }
            }
            index = saturating_u32(at);
        } else {
            peers.push(Place { addr, locality }, record);
        }
        let roles = &self.roles;
        self.slots
            .insert_unique(hash_id(&id), Slot::new(role, index), |slot| {
                hash_id(&roles[slot.role()].records[slot.index() as usize].id)
            });
        match &mut self.index {
            Some(locality_index) => {
                let records = &self.roles[role].records;
                locality_index.insert(role, index, &locality, |member| {
                    records[member as usize].key()
                });
            }
            None if self.slots.len() >= INDEX_BUILD => {
                self.index = Some(Box::new(LocalityIndex::build(&self.roles)));
            }
            None => {}
        }
        (
            finished && !counted_before,
            Slot::new(role, index),
            prior_expires_at,
        )
    }

    /// Removes a peer, if listed; `finished` says it stopped with nothing left.
    pub(super) fn remove(&mut self, id: &PeerId, finished: bool) -> Option<Removed> {
        let slot = self.find(id)?;
        let (_, record) = self.remove_slot(slot);
        Some(Removed {
            first_completion: finished && slot.role() == LEECHERS && !record.completed(),
            reported: record.reported,
        })
    }

    /// Replaces the last reported totals of the peer at `slot` (from
    /// [`PeerSet::upsert`]); returns the ones it replaces.
    pub(super) fn exchange_reported(&mut self, slot: Slot, reported: Reported) -> Reported {
        self.roles[slot.role()]
            .records
            .get_mut(slot.index() as usize)
            .map_or(Reported::UNKNOWN, |record| {
                std::mem::replace(&mut record.reported, reported)
            })
    }

    /// For a dual-stack client's twin in this family: whether its completed
    /// download was counted, and its last report, which `reported` replaces
    /// (both families' announces carry the same running totals, so both
    /// entries keep the latest); `None` if the id is not listed here. An
    /// empty set is not searched (most swarms have no IPv6 peers).
    pub(super) fn update_twin(
        &mut self,
        id: &PeerId,
        reported: Reported,
    ) -> Option<(bool, Reported)> {
        if self.len() == 0 {
            return None;
        }
        let slot = self.find(id)?;
        let record = self.roles[slot.role()]
            .records
            .get_mut(slot.index() as usize)?;
        let prior = std::mem::replace(&mut record.reported, reported);
        Some((record.completed(), prior))
    }

    /// Removes the entry at `slot` by swapping its role's last entry into its place.
    fn remove_slot(&mut self, slot: Slot) -> (Place<A>, Record) {
        let role = slot.role();
        let position = slot.index() as usize;
        let peers = &mut self.roles[role];
        let last = peers.len() - 1;
        if let Some(index) = &mut self.index {
            index.remove(
                role,
                slot.index(),
                &peers.places[position].locality,
                saturating_u32(last),
                &peers.places[last].locality,
            );
        }
        if role == LEECHERS && self.index.is_none() {
            // A small set keeps its leechers in the order they joined: the
            // bridgehead guard ranks a region's leechers by position, and a
            // swap would lift the newest leecher of any region to the front.
            // Below the index threshold that is one pass over < 192 entries.
            self.drop_leechers_in_order(|at, _| at == position);
            let peers = &mut self.roles[LEECHERS];
            // The dropped entry is now the last.
            return peers.swap_remove(peers.len() - 1);
        }
        let peers = &mut self.roles[role];
        let removed = peers.swap_remove(position);
        // Slots are matched by value here, not by id: no entry lookups needed.
        if let Ok(gone) = self
            .slots
            .find_entry(hash_id(&removed.1.id), |s| *s == slot)
        {
            gone.remove();
        }
        if let Some(moved) = peers.records.get(position) {
            let was = Slot::new(role, saturating_u32(last));
            if let Some(moved_slot) = self.slots.find_mut(hash_id(&moved.id), |s| *s == was) {
                *moved_slot = slot;
            }
        }
        if self.slots.len() <= INDEX_DROP && self.index.take().is_some() {
            self.sort_leechers();
        }
        removed
    }

    /// Puts the leechers back in join order, for a set that dropped its
    /// index (removals with an index swap entries around) and ranks by
    /// position again. At most [`INDEX_DROP`] peers, once per drop.
    fn sort_leechers(&mut self) {
        let peers = &mut self.roles[LEECHERS];
        let mut pairs: Vec<_> = std::mem::take(&mut peers.places)
            .into_iter()
            .zip(std::mem::take(&mut peers.records))
            .collect();
        pairs.sort_unstable_by_key(|(_, record)| record.key());
        (peers.places, peers.records) = pairs.into_iter().unzip();
        let roles = &self.roles;
        self.slots.clear();
        for (role, peers) in roles.iter().enumerate() {
            for (at, record) in peers.records.iter().enumerate() {
                self.slots.insert_unique(
                    hash_id(&record.id),
                    Slot::new(role, saturating_u32(at)),
                    |slot| hash_id(&roles[slot.role()].records[slot.index() as usize].id),
                );
            }
        }
    }

    /// Unlists the leechers `drop` picks (by position and record) in one
    /// pass that keeps the others in the order they joined, their slots
    /// re-pointed, and moves the dropped ones, in order, past the kept ones
    /// at the end of the columns; returns how many it dropped. For sets
    /// without an index only (an index would need re-linking).
    fn drop_leechers_in_order(&mut self, drop: impl Fn(usize, &Record) -> bool) -> usize {
        debug_assert!(self.index.is_none());
        let peers = &mut self.roles[LEECHERS];
        let mut kept = 0;
        for at in 0..peers.len() {
            let id = peers.records[at].id;
            let was = Slot::new(LEECHERS, saturating_u32(at));
            if drop(at, &peers.records[at]) {
                if let Ok(gone) = self.slots.find_entry(hash_id(&id), |s| *s == was) {
                    gone.remove();
                }
                continue;
            }
            if kept != at {
                peers.places.swap(kept, at);
                peers.records.swap(kept, at);
                if let Some(slot) = self.slots.find_mut(hash_id(&id), |s| *s == was) {
                    *slot = Slot::new(LEECHERS, saturating_u32(kept));
                }
            }
            kept += 1;
        }
        peers.len() - kept
    }

    /// Calls `f(seeder, addr, locality, id, expires_at, completed, join_seq)`
    /// for every peer, seeders first.
    #[allow(clippy::type_complexity)]
    pub(super) fn for_each(&self, mut f: impl FnMut(bool, A, &Locality, &PeerId, u32, bool, u32)) {
        self.for_each_reported(
            |seeder, addr, locality, id, expires_at, completed, join_seq, _| {
                f(seeder, addr, locality, id, expires_at, completed, join_seq)
            },
        );
    }

    /// As [`PeerSet::for_each`], with each peer's last reported totals.
    #[allow(clippy::type_complexity)]
    pub(super) fn for_each_reported(
        &self,
        mut f: impl FnMut(bool, A, &Locality, &PeerId, u32, bool, u32, Reported),
    ) {
        for role in [SEEDERS, LEECHERS] {
            let peers = &self.roles[role];
            for (place, record) in peers.places.iter().zip(&peers.records) {
                f(
                    role == SEEDERS,
                    place.addr,
                    &place.locality,
                    &record.id,
                    record.expires_at(),
                    record.completed(),
                    record.join_seq,
                    record.reported,
                );
            }
        }
    }

    /// Removes expired peers; returns how many.
    pub(super) fn purge(&mut self, now_secs: u32) -> usize {
        let mut removed = 0;
        let mut roles = [SEEDERS, LEECHERS].as_slice();
        if self.index.is_none() {
            let dropped = self.drop_leechers_in_order(|_, record| record.expires_at() <= now_secs);
            let peers = &mut self.roles[LEECHERS];
            let kept = peers.len() - dropped;
            peers.places.truncate(kept);
            peers.records.truncate(kept);
            removed += dropped;
            roles = &[SEEDERS];
        }
        for &role in roles {
            let mut index = 0;
            while let Some(record) = self.roles[role].records.get(index) {
                if record.expires_at() <= now_secs {
                    self.remove_slot(Slot::new(role, saturating_u32(index)));
                    removed += 1;
                } else {
                    index += 1;
                }
            }
        }
        removed
    }
}

/// Appends up to `wanted` peers for `who` to `out`, following `policy`;
/// `own` is where the announcer is listed in `set` (never handed to itself).
pub(super) fn hand_out<S: Candidates, R: Rng + ?Sized>(
    set: &S,
    who: &Announcer<'_>,
    own: Option<Slot>,
    wanted: usize,
    policy: &HandoutPolicy,
    rng: &mut R,
    out: &mut Vec<HandoutPeer>,
) {
    if wanted == 0 || set.seeders() + set.leechers() == 0 {
        return;
    }
    let mut handout = Handout {
        set,
        who,
        own,
        buckets: None,
        bridgeheads: if policy.tiers { policy.bridgeheads } else { 0 },
        bridgehead_every: policy.bridgehead_every,
        far_closed: false,
        hide_far: false,
    };
    let progress = &mut Progress::default();
    if !policy.tiers {
        let all = handout.all();
        let mut walk = Walk::new(all.len(), rng);
        handout.take(
            &mut progress.guard_picks,
            &all,
            false,
            None,
            &mut walk,
            wanted,
            false,
            out,
        );
        return;
    }
    if set.locality_index().is_none() {
        handout.buckets = Some(handout.classify());
    }
    // Without a leecher in a known region there is nothing to hide.
    handout.hide_far = handout.bridgeheads > 0
        && set
            .locality_index()
            .is_some_and(|index| !index.groups[LEECHERS][REGION_LEVEL].is_empty());
    if handout.bridgeheads > 0 && !who.to_seeder && !who.stalled && who.locality.region != 0 {
        // A region that holds the whole file already serves itself: its
        // bridgeheads stop pulling across too (a client that fetches pieces
        // in order, as the agent does, would otherwise pull each piece
        // across once per bridgehead, and again as each finishing one hands
        // its rank to the next).
        handout.far_closed =
            !handout.is_bridgehead(handout.region_rank()) || handout.region_holds_seeder();
    }

    let mut left = wanted;
    if !who.to_seeder && policy.seeder_guard > 0 {
        let mut guard = policy.seeder_guard.min(MAX_GUARD).min(wanted);
        for tier in Tier::ALL {
            if guard == 0 {
                break;
            }
            let got = handout.fill(progress, tier, true, true, guard, rng, out);
            guard -= got;
            left -= got;
        }
    }
    let spill = wanted * usize::from(policy.spill_percent.min(100)) / 100;
    let mut main = left.saturating_sub(spill);
    let mut spill = left - main;
    let mut reached = 0;
    for (number, tier) in Tier::ALL.into_iter().enumerate() {
        if main == 0 {
            break;
        }
        let got = handout.fill(progress, tier, false, true, main, rng, out);
        main -= got;
        if got > 0 {
            reached = number;
        }
    }
    // Spill slots are dealt round-robin over every farther tier, nearest
    // first: racks stay linked within a zone, zones within a region, and
    // regions to each other through leechers, not only through seeders.
    let mut open = [false; 4];
    for tier in Tier::ALL.into_iter().skip(reached + 1) {
        open[tier as usize] = true;
    }
    while spill > 0 && open.iter().any(|&o| o) {
        for tier in Tier::ALL {
            if spill == 0 || !open[tier as usize] {
                continue;
            }
            let got = handout.fill(progress, tier, false, true, 1, rng, out);
            spill -= got;
            open[tier as usize] = got == 1;
        }
    }
    // Far tiers empty, or near ones exhausted: whatever is left, nearest
    // first. No probe budget here: walking tier t, every nearer peer has
    // already been taken, so the walk skips at most `wanted` of them.
    let mut rest = main + spill;
    for tier in Tier::ALL {
        if rest == 0 {
            break;
        }
        rest -= handout.fill(progress, tier, false, false, rest, rng, out);
    }
}

impl<S: Candidates> Handout<'_, '_, S> {
    fn all(&self) -> Seq<'static> {
        Seq::All {
            seeders: if self.who.to_seeder {
                0
            } else {
                self.set.seeders()
            },
            leechers: self.set.leechers(),
        }
    }

    /// One pass over a small set's candidates, filing each by tier.
    fn classify(&self) -> Buckets {
        let seeders = if self.who.to_seeder {
            0
        } else {
            self.set.seeders()
        };
        let mut buckets = Buckets {
            positions: [[0; INDEX_BUILD]; 4],
            lens: [0; 4],
            seeder_lens: [0; 4],
            seeders,
        };
        let mut far = FarRegions([0; FAR_REGIONS]);
        // Regions holding a seeder serve themselves: their leechers are
        // handed to nobody afar. Seeders come first in the pass below and
        // mark their regions there; a seeder asking is handed no seeders,
        // so for it they are marked here.
        let mut seeded = [false; FAR_REGIONS];
        if self.bridgeheads > 0 && self.who.to_seeder {
            for index in 0..self.set.seeders() {
                let region = self
                    .set
                    .locality(Slot::new(SEEDERS, saturating_u32(index)))
                    .region;
                if let Some(held) = seeded.get_mut(usize::from(region)) {
                    *held = true;
                }
            }
        }
        // The announcer's own position among the candidates, if it is one
        // (a seeder asking is not: seeders are no candidates then).
        let own = self.own.map_or(usize::MAX, |own| match own.role() {
            SEEDERS if self.who.to_seeder => usize::MAX,
            SEEDERS => own.index() as usize,
            _ => seeders + own.index() as usize,
        });
        let mut position = 0usize;
        self.set.each_locality(seeders, |locality| {
            let here = position;
            position += 1;
            if here == own {
                return;
            }
            let tier = self.who.locality.tier_of(&locality) as usize;
            if here < seeders
                && let Some(held) = seeded.get_mut(usize::from(locality.region))
            {
                *held = true;
            }
            if self.bridgeheads > 0
                && tier == Tier::Other as usize
                && here >= seeders
                && locality.region != 0
                && (!self.is_bridgehead(far.rank(locality.region))
                    || seeded.get(usize::from(locality.region)) == Some(&true))
            {
                // Past its region's bridgeheads: no far peer of anyone's.
                return;
            }
            let (Some(slot), Ok(here)) = (
                buckets.positions[tier].get_mut(buckets.lens[tier]),
                u8::try_from(here),
            ) else {
                // Cannot happen below INDEX_BUILD peers; skipping is the safe answer.
                return;
            };
            *slot = here;
            buckets.lens[tier] += 1;
            if usize::from(here) < seeders {
                buckets.seeder_lens[tier] += 1;
            }
        });
        buckets
    }

    /// Whether the leecher of this rank in its region (0 = joined first)
    /// takes links to other regions: the first `bridgeheads`, and then one
    /// in every [`REGION_SHARE`], so a region where hundreds start at once
    /// has entry points in proportion and in every rack.
    fn is_bridgehead(&self, rank: usize) -> bool {
        rank < self.bridgeheads
            || (self.bridgehead_every > 0 && rank.is_multiple_of(self.bridgehead_every))
    }

    /// Whether a seeder sits in the announcer's region.
    fn region_holds_seeder(&self) -> bool {
        if let Some(buckets) = &self.buckets {
            return [Tier::Subnet, Tier::Zone, Tier::Region]
                .into_iter()
                .any(|tier| buckets.seeder_lens[tier as usize] > 0);
        }
        self.set.locality_index().is_some_and(|index| {
            !index
                .group(
                    SEEDERS,
                    REGION_LEVEL,
                    level_keys(&self.who.locality)[REGION_LEVEL],
                )
                .is_empty()
        })
    }

    /// How many of its region's leechers joined before the announcer.
    fn region_rank(&self) -> usize {
        if let Some(buckets) = &self.buckets {
            // Bucket positions ascend, seeders' first: the near tiers'
            // leechers before the announcer's own position.
            let own = self.own.map_or(usize::MAX, |own| match own.role() {
                SEEDERS => 0,
                _ => buckets.seeders + own.index() as usize,
            });
            return [Tier::Subnet, Tier::Zone, Tier::Region]
                .into_iter()
                .map(|tier| {
                    let tier = tier as usize;
                    let positions = &buckets.positions[tier][..buckets.lens[tier]];
                    let before = positions.partition_point(|&p| usize::from(p) < own);
                    before.saturating_sub(buckets.seeder_lens[tier])
                })
                .sum();
        }
        let Some(index) = self.set.locality_index() else {
            return 0;
        };
        match self.own {
            Some(own) if own.role() == LEECHERS => index
                .region_rank(LEECHERS, own.index())
                .map_or(0, |rank| rank as usize),
            _ => index
                .group(
                    LEECHERS,
                    REGION_LEVEL,
                    level_keys(&self.who.locality)[REGION_LEVEL],
                )
                .len(),
        }
    }

    /// Whether a far leecher is past its region's bridgeheads (indexed sets;
    /// a small set's classify pass leaves those out of the far bucket).
    fn hidden_from_afar(&self, slot: Slot) -> bool {
        slot.role() == LEECHERS
            && self.set.locality_index().is_some_and(|index| {
                index
                    .region_rank(LEECHERS, slot.index())
                    .is_some_and(|rank| !self.is_bridgehead(rank as usize))
                    || level_keys(&self.set.locality(slot))[REGION_LEVEL].is_some_and(|region| {
                        !index.group(SEEDERS, REGION_LEVEL, Some(region)).is_empty()
                    })
            })
    }

    /// The candidates of one tier; `seeders_only` for the seeder guard.
    fn seq(&self, tier: Tier, seeders_only: bool) -> Seq<'_> {
        if let Some(buckets) = &self.buckets {
            // Walking only the seeder prefix keeps the guard's picks uniform;
            // rejecting leechers on a walk over the whole bucket would favour
            // whichever seeder follows the leechers in walk order.
            let tier = tier as usize;
            let len = if seeders_only {
                buckets.seeder_lens[tier]
            } else {
                buckets.lens[tier]
            };
            return Seq::Bucket {
                positions: &buckets.positions[tier][..len],
                seeders: buckets.seeders,
            };
        }
        let leechers_too = !seeders_only;
        let seeders_too = !self.who.to_seeder;
        match (self.set.locality_index(), tier) {
            (Some(index), Tier::Subnet | Tier::Zone | Tier::Region) => {
                let level = tier as usize;
                let key = level_keys(&self.who.locality)[level];
                let seeders = if seeders_too {
                    index.group(SEEDERS, level, key)
                } else {
                    &[]
                };
                let leechers = if leechers_too {
                    index.group(LEECHERS, level, key)
                } else {
                    &[]
                };
                if tier == Tier::Subnet {
                    Seq::Subnet { seeders, leechers }
                } else {
                    Seq::Groups { seeders, leechers }
                }
            }
            _ => Seq::All {
                seeders: if seeders_too { self.set.seeders() } else { 0 },
                leechers: if leechers_too { self.set.leechers() } else { 0 },
            },
        }
    }

    /// Appends up to `wanted` peers of exactly `tier`; returns how many.
    #[allow(clippy::too_many_arguments)]
    fn fill<R: Rng + ?Sized>(
        &self,
        progress: &mut Progress,
        tier: Tier,
        guard: bool,
        budgeted: bool,
        wanted: usize,
        rng: &mut R,
        out: &mut Vec<HandoutPeer>,
    ) -> usize {
        if tier == Tier::Other && self.far_closed {
            return 0;
        }
        let seq = self.seq(tier, guard);
        if seq.len() == 0 {
            return 0;
        }
        let walks = if guard {
            &mut progress.guard_walks
        } else {
            &mut progress.walks
        };
        let walk = walks[tier as usize].get_or_insert_with(|| Walk::new(seq.len(), rng));
        self.take(
            &mut progress.guard_picks,
            &seq,
            budgeted,
            Some(tier),
            walk,
            wanted,
            guard,
            out,
        )
    }

    /// Walks `seq`, appending up to `wanted` acceptable peers.
    ///
    /// Group sequences hold nearer peers too (a zone's list holds the
    /// announcer's subnet); those are skipped, with a probe budget so that a
    /// tier made almost only of nearer peers cannot turn a handout into a scan.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &self,
        guard_picks: &mut GuardPicks,
        seq: &Seq<'_>,
        budgeted: bool,
        tier: Option<Tier>,
        walk: &mut Walk,
        wanted: usize,
        guard: bool,
        out: &mut Vec<HandoutPeer>,
    ) -> usize {
        let check_tier = tier.filter(|_| !seq.exact());
        // Once every nearer peer is taken, skipping them costs at most what
        // this reply already holds; the budget covers that, so a budget only
        // runs out on spill walks through untaken nearer peers.
        let mut budget = if seq.exact() || !budgeted {
            usize::MAX
        } else {
            4 * wanted + 32 + out.len()
        };
        let mut added = 0;
        while added < wanted && budget > 0 {
            let Some(k) = walk.next() else { break };
            budget -= 1;
            let (role, index) = seq.at(k);
            if self.own.is_some_and(|own| own == Slot::new(role, index)) {
                continue;
            }
            if guard && role != SEEDERS {
                continue;
            }
            if !guard && role == SEEDERS && guard_picks.contains(index) {
                continue;
            }
            let slot = Slot::new(role, index);
            let entry_tier = match (tier, check_tier) {
                // Exact sequences: no need to touch the peer's locality.
                (Some(tier), None) => tier,
                _ => self.who.locality.tier_of(&self.set.locality(slot)),
            };
            if check_tier.is_some_and(|tier| tier != entry_tier) {
                continue;
            }
            if self.hide_far && entry_tier == Tier::Other && self.hidden_from_afar(slot) {
                continue;
            }
            if guard {
                guard_picks.push(index);
            }
            out.push(HandoutPeer {
                id: self.who.with_ids.then(|| self.set.peer_id(slot)),
                addr: self.set.addr(slot),
                tier: entry_tier,
            });
            added += 1;
        }
        added
    }
}

impl<A: Copy + Into<SocketAddr>> Candidates for PeerSet<A> {
    fn seeders(&self) -> usize {
        PeerSet::seeders(self)
    }

    fn leechers(&self) -> usize {
        PeerSet::leechers(self)
    }

    fn find(&self, id: &PeerId) -> Option<Slot> {
        PeerSet::find(self, id)
    }

    fn locality(&self, slot: Slot) -> Locality {
        self.roles[slot.role()].places[slot.index() as usize].locality
    }

    fn addr(&self, slot: Slot) -> SocketAddr {
        self.roles[slot.role()].places[slot.index() as usize]
            .addr
            .into()
    }

    fn peer_id(&self, slot: Slot) -> PeerId {
        self.roles[slot.role()].records[slot.index() as usize].id
    }

    fn locality_index(&self) -> Option<&LocalityIndex> {
        self.index.as_deref()
    }

    fn each_locality(&self, seeders: usize, mut f: impl FnMut(Locality)) {
        let seeders = &self.roles[SEEDERS].places[..seeders];
        for place in seeders.iter().chain(&self.roles[LEECHERS].places) {
            f(place.locality);
        }
    }
}

pub(super) fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
impl<A> PeerSet<A> {
    /// Checks that the index, when present, lists exactly the entries, each
    /// where its links say, a region's leechers in join order; without an
    /// index, that the leechers are in join order.
    pub(super) fn check_index(&self) {
        let Some(index) = &self.index else {
            let keys: Vec<JoinKey> = self.roles[LEECHERS]
                .records
                .iter()
                .map(Record::key)
                .collect();
            assert!(keys.is_sorted(), "a small set's leechers out of join order");
            return;
        };
        for role in [SEEDERS, LEECHERS] {
            assert_eq!(index.links[role].len(), self.roles[role].len());
            let mut listed = 0;
            for (position, place) in self.roles[role].places.iter().enumerate() {
                for (level, key) in level_keys(&place.locality).into_iter().enumerate() {
                    let link = index.links[role][position][level];
                    match key {
                        Some(key) => {
                            assert_eq!(
                                index.groups[role][level][&key][link as usize],
                                position as u32
                            );
                            listed += 1;
                        }
                        None => assert_eq!(link, NO_LINK),
                    }
                }
            }
            // A region's leechers stay in join order: their bridgehead ranks.
            for members in index.groups[role][REGION_LEVEL].values() {
                let keys: Vec<JoinKey> = members
                    .iter()
                    .map(|&member| self.roles[role].records[member as usize].key())
                    .collect();
                assert!(
                    !ordered(role, REGION_LEVEL) || keys.is_sorted(),
                    "a region's leechers out of join order"
                );
            }
            let total: usize = index.groups[role]
                .iter()
                .flat_map(|groups| groups.values())
                .map(Vec::len)
                .sum();
            assert_eq!(total, listed, "groups hold stale members");
        }
    }
}
