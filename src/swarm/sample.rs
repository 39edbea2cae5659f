//! Picking a random handful of peers out of a large swarm in O(wanted) time.

use rand::{Rng, RngExt};

/// A walk over `0..len` in a random order that visits every index once.
///
/// A full shuffle or a scan would cost O(len) per announce; instead this walks
/// the ring `0..len` from a random start with a random stride coprime to
/// `len`, which visits distinct indices, gives each index the same chance of
/// coming first, and varies which peers come together. Stopping early is free,
/// and a stopped walk resumes where it left off.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    len: usize,
    next: usize,
    stride: usize,
    left: usize,
}

impl Walk {
    /// A fresh random walk over `0..len`.
    pub fn new<R: Rng + ?Sized>(len: usize, rng: &mut R) -> Self {
        let (next, stride) = if len <= 1 {
            (0, 1)
        } else {
            (rng.random_range(0..len), coprime_stride(len, rng))
        };
        Self {
            len,
            next,
            stride,
            left: len,
        }
    }

    /// Indices not visited yet.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl Iterator for Walk {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let index = self.next;
        // `stride < len`, so one subtraction wraps; a `%` here would cost a
        // division per peer handed out.
        self.next += self.stride;
        if self.next >= self.len {
            self.next -= self.len;
        }
        Some(index)
    }
}

/// Yields up to `wanted` distinct indices from `0..len`, every index equally likely.
pub fn sample_indices<R: Rng + ?Sized>(
    len: usize,
    wanted: usize,
    rng: &mut R,
) -> impl Iterator<Item = usize> + use<R> {
    Walk::new(len, rng).take(wanted)
}

/// A random stride in `1..len` sharing no factor with `len`, so the walk visits
/// `len` distinct positions before repeating.
fn coprime_stride<R: Rng + ?Sized>(len: usize, rng: &mut R) -> usize {
    // Roughly 6/π² ≈ 61% of numbers are coprime to a random `len`; a handful of
    // tries nearly always succeeds, and stride 1 is always a correct fallback.
    for _ in 0..8 {
        let candidate = rng.random_range(1..len);
        if gcd(candidate, len) == 1 {
            return candidate;
        }
    }
    1
}

/// Binary (Stein's) gcd: shifts and subtractions, no division.
fn gcd(mut a: usize, mut b: usize) -> usize {
    if a == 0 || b == 0 {
        return a | b;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    proptest! {
        #[test]
        fn indices_are_distinct_in_range_and_bounded(len in 0usize..500, wanted in 0usize..600, seed: u64) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let picked: Vec<usize> = sample_indices(len, wanted, &mut rng).collect();
            prop_assert_eq!(picked.len(), wanted.min(len));
            let mut sorted = picked.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), picked.len(), "duplicates in {:?}", picked);
            prop_assert!(picked.iter().all(|&i| i < len));
        }

        #[test]
        fn a_resumed_walk_still_visits_each_index_once(len in 0usize..300, first in 0usize..300, seed: u64) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut walk = Walk::new(len, &mut rng);
            let mut seen: Vec<usize> = walk.by_ref().take(first).collect();
            prop_assert_eq!(walk.remaining(), len - seen.len());
            seen.extend(walk);
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..len).collect::<Vec<_>>());
        }
    }

    #[test]
    fn every_index_is_picked_about_equally_often() {
        let mut rng = SmallRng::seed_from_u64(7);
        let (len, wanted, rounds) = (40, 5, 40_000);
        let mut hits = vec![0u32; len];
        for _ in 0..rounds {
            for i in sample_indices(len, wanted, &mut rng) {
                hits[i] += 1;
            }
        }
        let expected = (rounds * wanted / len) as f64;
        for (index, &count) in hits.iter().enumerate() {
            let deviation = (count as f64 - expected).abs() / expected;
            assert!(
                deviation < 0.05,
                "index {index}: {count} hits, expected ~{expected}"
            );
        }
    }

    #[test]
    fn gcd_is_right() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(7, 13), 1);
        assert_eq!(gcd(5, 0), 5);
        assert_eq!(gcd(0, 5), 5);
        assert_eq!(gcd(48, 180), 12);
        for a in 1..200 {
            for b in 1..200 {
                let expected = (1..=a.min(b)).rev().find(|d| a % d == 0 && b % d == 0);
                assert_eq!(Some(gcd(a, b)), expected, "gcd({a}, {b})");
            }
        }
    }
}
