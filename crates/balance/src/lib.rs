//! # podmesh-balance
//!
//! Which endpoint gets the next request or connection (R3.1, R3.2). The choice is a pure function of the
//! candidates, their current load and random numbers, so it is tested without sockets; [`Loads`] keeps the live
//! load counters the sidecar feeds it.
//!
//! - HTTP, per request: least-request **power of two choices** ([`p2c`]) — two distinct endpoints drawn at random,
//!   the one with fewer requests in flight wins. It tracks load nearly as well as a full scan and never herds every
//!   request onto the one endpoint that just looked idle (Envoy's and Linkerd's default).
//! - TCP, per connection: **least connections** ([`least_loaded`]), ties broken in turn so that short sequential
//!   connections still spread.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Least-request power of two choices: the index of the chosen candidate, `None` when there is none.
/// `load(i)` is candidate `i`'s requests in flight; `rng` yields uniform random numbers.
pub fn p2c(n: usize, load: impl Fn(usize) -> u64, rng: &mut Rng) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        _ => {
            let a = rng.below(n);
            // A second draw among the others, so the two are distinct.
            let b = (a + 1 + rng.below(n - 1)) % n;
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// Least connections: the index of the least loaded candidate. Among equally loaded ones, `turn` picks which
/// (pass a counter that advances on every call), so connections that open and close one after another rotate
/// over the endpoints instead of all landing on the first.
pub fn least_loaded(n: usize, load: impl Fn(usize) -> u64, turn: u64) -> Option<usize> {
    let min = (0..n).map(&load).min()?;
    let tied: Vec<usize> = (0..n).filter(|&i| load(i) == min).collect();
    let pick = usize::try_from(turn % tied.len() as u64).unwrap_or(0);
    tied.get(pick).copied()
}

/// Live load per endpoint: requests in flight (HTTP) or open connections (TCP). A [`LoadGuard`] counts one unit
/// for as long as it lives.
///
/// An endpoint with nothing in flight has load 0 whether or not it has a counter, so idle counters are dropped
/// whenever the map has doubled since the last sweep: endpoints come and go all day, and the map stays the size of
/// the endpoints in use.
#[derive(Debug)]
pub struct Loads<K> {
    counters: Mutex<Counters<K>>,
    turn: AtomicU64,
}

#[derive(Debug)]
struct Counters<K> {
    by_key: HashMap<K, Arc<AtomicU64>>,
    /// The size at which the next new key sweeps idle counters first.
    sweep_at: usize,
}

/// The smallest map that is ever swept.
const MIN_SWEEP: usize = 64;

impl<K> Default for Loads<K> {
    fn default() -> Self {
        Self { counters: Mutex::new(Counters { by_key: HashMap::new(), sweep_at: MIN_SWEEP }), turn: AtomicU64::new(0) }
    }
}

impl<K: Hash + Eq + Clone> Loads<K> {
    pub fn load(&self, key: &K) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.by_key.get(key).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts one request or connection on `key` until the guard is dropped.
    pub fn start(&self, key: &K) -> LoadGuard {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        if counters.by_key.len() >= counters.sweep_at && !counters.by_key.contains_key(key) {
            // Only this map holds an idle counter (a guard holds a clone), so nothing can count on it any more.
            counters.by_key.retain(|_, c| Arc::strong_count(c) > 1);
            counters.sweep_at = (counters.by_key.len() * 2).max(MIN_SWEEP);
        }
        let counter = Arc::clone(counters.by_key.entry(key.clone()).or_default());
        counter.fetch_add(1, Ordering::Relaxed);
        LoadGuard(counter)
    }

    /// Endpoints with a counter now (idle ones may or may not have one): how tests see the sweep.
    pub fn tracked(&self) -> usize {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner).by_key.len()
    }

    /// The next tie-break turn for [`least_loaded`].
    pub fn next_turn(&self) -> u64 {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }
}

/// One request in flight, or one open connection, on an endpoint.
#[derive(Debug)]
pub struct LoadGuard(Arc<AtomicU64>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A small, fast pseudo-random generator (xorshift64*) for balancing draws and weighted route choice. Not for
/// anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Rng(seed | 1)
    }

    /// Independent streams for each request: a process-wide seed (clock and pid, taken once) advanced by a
    /// counter. Called per request, so it makes no system call.
    pub fn from_entropy() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = *SEED.get_or_init(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
        });
        let c = COUNTER.fetch_add(1, Ordering::Relaxed);
        // SplitMix64 of seed + counter: consecutive counters give unrelated states.
        let mut z = seed.wrapping_add(c.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng::new(z ^ (z >> 31))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift: no modulo bias worth the name at these sizes.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn idle_counters_are_swept_and_live_ones_kept() {
        let loads: Loads<u32> = Loads::default();
        let held = loads.start(&0);
        for key in 1..10_000 {
            drop(loads.start(&key));
            assert!(loads.tracked() <= 2 * MIN_SWEEP, "{} counters after {key} endpoints", loads.tracked());
        }
        assert_eq!(loads.load(&0), 1, "a counter in use survives every sweep");
        let again = loads.start(&0);
        assert_eq!(loads.load(&0), 2);
        drop((held, again));
        assert_eq!(loads.load(&0), 0);
    }

    #[test]
    fn p2c_prefers_the_less_loaded_of_two_distinct_draws() {
        let mut rng = Rng::new(7);
        assert_eq!(p2c(0, |_| 0, &mut rng), None);
        assert_eq!(p2c(1, |_| 99, &mut rng), Some(0));
        // With two candidates both are always drawn, so the less loaded one always wins.
        for _ in 0..100 {
            assert_eq!(p2c(2, |i| [5, 1][i], &mut rng), Some(1));
        }
        // The most loaded of three can only win against itself, which distinct draws rule out.
        for _ in 0..1000 {
            assert_ne!(p2c(3, |i| [0, 0, 9][i], &mut rng), Some(2));
        }
    }

    #[test]
    fn p2c_spreads_equal_load_evenly() {
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[p2c(3, |_| 0, &mut rng).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn p2c_balances_live_load() {
        // Requests that never finish: each choice adds load. P2C keeps the spread within a few requests.
        let mut rng = Rng::new(3);
        let mut load = [0u64; 4];
        for _ in 0..400 {
            let i = p2c(4, |i| load[i], &mut rng).unwrap();
            load[i] += 1;
        }
        let (min, max) = (load.iter().min().unwrap(), load.iter().max().unwrap());
        assert!(max - min <= 4, "{load:?}");
    }

    #[test]
    fn least_loaded_takes_the_minimum_and_rotates_ties() {
        assert_eq!(least_loaded(0, |_| 0, 0), None);
        assert_eq!(least_loaded(3, |i| [3, 1, 2][i], 5), Some(1));
        let picks: Vec<usize> = (0..6).map(|t| least_loaded(3, |i| [0, 4, 0][i], t).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
    }

    #[test]
    fn guards_count_while_they_live() {
        let loads: Loads<&str> = Loads::default();
        let a = loads.start(&"a");
        let a2 = loads.start(&"a");
        let b = loads.start(&"b");
        assert_eq!((loads.load(&"a"), loads.load(&"b"), loads.load(&"c")), (2, 1, 0));
        drop(a);
        drop(b);
        assert_eq!((loads.load(&"a"), loads.load(&"b")), (1, 0));
        drop(a2);
        assert_eq!(loads.load(&"a"), 0);
    }

    #[test]
    fn fresh_generators_differ() {
        let firsts: std::collections::BTreeSet<u64> = (0..1000).map(|_| Rng::from_entropy().next_u64()).collect();
        assert_eq!(firsts.len(), 1000);
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut rng = Rng::from_entropy();
        for n in 1..50 {
            for _ in 0..100 {
                assert!(rng.below(n) < n);
            }
        }
    }
}
