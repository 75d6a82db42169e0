//! Consumer groups without a coordinator: who should own a partition
//! (rendezvous hashing over the group's members) and who may (the
//! producer's lease table, which fences a stale owner).
//!
//! Pure: no I/O, no clock (the caller passes `now`).
//!
//! # Guarantees
//! - [`owner`] is a function of the member set alone: every member that
//!   sees the same set picks the same owner, and a member joining or
//!   leaving moves only the partitions it wins or held (about `1/n`).
//! - [`LeaseTable`] grants a partition to one member at a time: a lease
//!   is valid until it is released or `ttl` passes without a renewal, and
//!   a commit or fetch under a token that is no longer current is refused
//!   ([`LeaseRefusal::Fenced`]), so a member that lost its lease cannot
//!   move the group's offset.
//!
//! # Not guaranteed
//! Views of the membership differ for a while: two members may both
//! believe they should own a partition. The lease decides; the loser
//! retries its claim later. A member paused past `ttl` loses its lease
//! without knowing until its next renewal or commit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The weight of `member` for `partition`: a 64-bit mix of both (the
/// finaliser of SplitMix64), stable across versions and processes.
fn weight(member: u64, partition: u32) -> u64 {
    let mut z = member ^ u64::from(partition).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The member that should own `partition`: the one of highest weight
/// (ties, which need equal ids, go to the lower id). `None` when
/// `members` is empty.
pub fn owner(partition: u32, members: &[u64]) -> Option<u64> {
    members
        .iter()
        .copied()
        .max_by_key(|&m| (weight(m, partition), std::cmp::Reverse(m)))
}

/// The partitions of `0..partitions` that `me` should own among
/// `members` (which should include `me`).
pub fn assigned(me: u64, partitions: u32, members: &[u64]) -> Vec<u32> {
    (0..partitions)
        .filter(|&p| owner(p, members) == Some(me))
        .collect()
}

/// Why the lease table refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// Another member holds the partition's lease.
    Held {
        /// The holder.
        member: u64,
        /// Until its lease runs out, unless renewed.
        remaining: Duration,
    },
    /// The token is not the partition's current lease (released,
    /// expired, or superseded).
    Fenced,
}

#[derive(Debug, Clone)]
struct Lease {
    member: u64,
    token: u64,
    expires: Instant,
}

/// Leases on `(group, partition)`, granted by the producer.
#[derive(Debug)]
pub struct LeaseTable {
    ttl: Duration,
    next_token: u64,
    leases: HashMap<(String, u32), Lease>,
}

impl LeaseTable {
    /// An empty table whose leases last `ttl` from each claim or renewal;
    /// tokens start at `first_token` (random per process, so that a
    /// restarted producer never honours a token it did not issue).
    pub fn new(ttl: Duration, first_token: u64) -> Self {
        LeaseTable {
            ttl,
            next_token: first_token.max(1),
            leases: HashMap::new(),
        }
    }

    /// How long a lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Grants `member` the lease on `(group, partition)` if it is free,
    /// expired or already `member`'s (a new token either way).
    pub fn claim(
        &mut self,
        group: &str,
        partition: u32,
        member: u64,
        now: Instant,
    ) -> Result<u64, LeaseRefusal> {
        let key = (group.to_owned(), partition);
        if let Some(l) = self.leases.get(&key) {
            if l.member != member && l.expires > now {
                return Err(LeaseRefusal::Held {
                    member: l.member,
                    remaining: l.expires - now,
                });
            }
        }
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        self.leases.insert(
            key,
            Lease {
                member,
                token,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Extends the lease `token` on `(group, partition)` by `ttl`.
    pub fn renew(
        &mut self,
        group: &str,
        partition: u32,
        token: u64,
        now: Instant,
    ) -> Result<(), LeaseRefusal> {
        let ttl = self.ttl;
        match self.current(group, partition, token, now) {
            Some(l) => {
                l.expires = now + ttl;
                Ok(())
            }
            None => Err(LeaseRefusal::Fenced),
        }
    }

    /// Whether `token` is the current, unexpired lease.
    pub fn check(&mut self, group: &str, partition: u32, token: u64, now: Instant) -> bool {
        self.current(group, partition, token, now).is_some()
    }

    /// Gives the lease up (no-op if `token` is not current).
    pub fn release(&mut self, group: &str, partition: u32, token: u64) {
        let key = (group.to_owned(), partition);
        if self.leases.get(&key).is_some_and(|l| l.token == token) {
            self.leases.remove(&key);
        }
    }

    /// Drops expired leases (bounds the table by the live claims).
    pub fn expire(&mut self, now: Instant) {
        self.leases.retain(|_, l| l.expires > now);
    }

    /// Leases held now: `(group, partition, member)`.
    pub fn holders(&self, now: Instant) -> Vec<(String, u32, u64)> {
        let mut v: Vec<_> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires > now)
            .map(|((g, p), l)| (g.clone(), *p, l.member))
            .collect();
        v.sort();
        v
    }

    fn current(
        &mut self,
        group: &str,
        partition: u32,
        token: u64,
        now: Instant,
    ) -> Option<&mut Lease> {
        self.leases
            .get_mut(&(group.to_owned(), partition))
            .filter(|l| l.token == token && l.expires > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_a_join_moves_only_what_the_newcomer_wins() {
        let members: Vec<u64> = (1..=4).map(|i| i * 0x1234_5678_9abc).collect();
        let before: Vec<u64> = (0..64).map(|p| owner(p, &members).unwrap()).collect();
        let mut more = members.clone();
        more.push(0xdead_beef);
        let after: Vec<u64> = (0..64).map(|p| owner(p, &more).unwrap()).collect();
        for p in 0..64 {
            assert!(after[p] == before[p] || after[p] == 0xdead_beef);
        }
        let won = after.iter().filter(|&&m| m == 0xdead_beef).count();
        assert!(won > 0 && won < 32, "newcomer won {won} of 64");
        // Every member's own view agrees on the split.
        let total: usize = more.iter().map(|&m| assigned(m, 64, &more).len()).sum();
        assert_eq!(total, 64);
        assert_eq!(owner(3, &[]), None);
    }

    #[test]
    fn a_lease_is_exclusive_until_released_or_expired_and_fences_the_old_token() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(3);
        let mut t = LeaseTable::new(ttl, 7);
        let a = t.claim("g", 0, 1, t0).unwrap();
        assert!(matches!(
            t.claim("g", 0, 2, t0 + Duration::from_secs(1)),
            Err(LeaseRefusal::Held { member: 1, .. })
        ));
        // Another partition or group is independent.
        assert!(t.claim("g", 1, 2, t0).is_ok());
        assert!(t.claim("h", 0, 2, t0).is_ok());
        t.renew("g", 0, a, t0 + Duration::from_secs(2)).unwrap();
        assert!(t.check("g", 0, a, t0 + Duration::from_secs(4)));
        // Expired: the other member takes it, the old token is fenced.
        let b = t.claim("g", 0, 2, t0 + Duration::from_secs(6)).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            t.renew("g", 0, a, t0 + Duration::from_secs(6)),
            Err(LeaseRefusal::Fenced)
        );
        assert!(!t.check("g", 0, a, t0 + Duration::from_secs(6)));
        // Released: free at once.
        t.release("g", 0, a); // stale token: no effect
        assert!(t.check("g", 0, b, t0 + Duration::from_secs(6)));
        t.release("g", 0, b);
        assert!(t.claim("g", 0, 1, t0 + Duration::from_secs(6)).is_ok());
        t.expire(t0 + Duration::from_secs(60));
        assert!(t.holders(t0 + Duration::from_secs(60)).is_empty());
    }
}
