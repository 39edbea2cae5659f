//! Picking a random handful of peers out of a large swarm in O(wanted) time.

use rand::{Rng, RngExt};

/// Yields up to `wanted` distinct indices from `0..len`, every index equally likely.
///
/// A full shuffle or a scan would cost O(len) per announce; instead this walks
/// the ring `0..len` from a random start with a random stride coprime to
/// `len`, which visits distinct indices, gives each index the same chance
/// (`wanted / len`) of being picked, and varies which peers come together.
pub fn sample_indices<R: Rng + ?Sized>(
    len: usize,
    wanted: usize,
    rng: &mut R,
) -> impl Iterator<Item = usize> + use<R> {
    let take = wanted.min(len);
    let (start, stride) = if len <= 1 {
        (0, 1)
    } else {
        (rng.random_range(0..len), coprime_stride(len, rng))
    };
    let mut next = start;
    (0..take).map(move |_| {
        let index = next;
        // `len` fits a swarm, so `next + stride < 2 * len` cannot overflow.
        next = (next + stride) % len;
        index
    })
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

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
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
    }
}
