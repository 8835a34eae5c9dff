//! Assignment arithmetic, pure: how the designated web-cache spreads the
//! 256 hash buckets, or the values of a mask, over the usable caches.
//!
//! Invariants (tested): every slot is owned when there is at least one
//! cache with weight; each cache's share is its weight's share of the
//! slots, rounded by largest remainder, so shares differ from the exact
//! quota by less than one; a recomputation keeps every slot whose owner is
//! still present and under its new quota, so a join or leave moves only
//! the buckets it has to.

use std::net::Ipv4Addr;

use crate::component::{
    BUCKET_UNASSIGNED, HashAssignment, MaskElement, MaskValueSet, ValueElement,
};

/// A usable cache and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub ip: Ipv4Addr,
    pub weight: u16,
}

/// The mask the draft suggests for the source address (0x1741: six bits
/// spread over the last two octets, 64 values).
pub const DEFAULT_SOURCE_MASK: u32 = 0x1741;
/// At most 7 mask bits (128 values), the draft's limit.
pub const MAX_MASK_BITS: u32 = 7;

/// How many of `slots` each member gets, in member order.
pub fn quotas(members: &[Member], slots: usize) -> Vec<usize> {
    if members.is_empty() {
        return Vec::new();
    }
    let all_zero = members.iter().all(|m| m.weight == 0);
    let weights: Vec<u64> = members
        .iter()
        .map(|m| if all_zero { 1 } else { u64::from(m.weight) })
        .collect();
    let total: u64 = weights.iter().sum();
    let slots64 = slots as u64;
    let mut out: Vec<usize> = weights
        .iter()
        .map(|w| (w * slots64 / total) as usize)
        .collect();
    let mut given: usize = out.iter().sum();
    // Largest remainder first; ties go to the earlier (lower-address) member.
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weights[i] * slots64 % total));
    for &i in order.iter().cycle() {
        if given >= slots {
            break;
        }
        if weights[i] == 0 {
            continue;
        }
        out[i] += 1;
        given += 1;
    }
    out
}

/// Spreads `slots` over `members` (sorted by address), keeping what
/// `previous` gave to members still present where quotas allow.
/// `previous[i]` is slot i's former owner.
fn spread(members: &[Member], slots: usize, previous: &[Option<Ipv4Addr>]) -> Vec<Option<usize>> {
    let quota = quotas(members, slots);
    let mut count = vec![0usize; members.len()];
    let mut owner: Vec<Option<usize>> = vec![None; slots];
    for (slot, prev) in previous.iter().enumerate().take(slots) {
        if let Some(ip) = prev
            && let Some(i) = members.iter().position(|m| m.ip == *ip)
            && count[i] < quota[i]
        {
            owner[slot] = Some(i);
            count[i] += 1;
        }
    }
    let mut next = 0usize;
    for slot in owner.iter_mut() {
        if slot.is_some() {
            continue;
        }
        while next < members.len() && count[next] >= quota[next] {
            next += 1;
        }
        if next < members.len() {
            *slot = Some(next);
            count[next] += 1;
        }
    }
    owner
}

/// The hash assignment for `members`: caches listed in address order, each
/// bucket the index of its cache.
pub fn hash_assignment(members: &[Member], previous: Option<&HashAssignment>) -> HashAssignment {
    let mut members = members.to_vec();
    members.sort_by_key(|m| m.ip);
    members.dedup_by_key(|m| m.ip);
    members.truncate(usize::from(BUCKET_UNASSIGNED & 0x7f));
    let prev: Vec<Option<Ipv4Addr>> = match previous {
        Some(p) => (0..=255u8).map(|b| p.owner(b)).collect(),
        None => vec![None; 256],
    };
    let owners = spread(&members, 256, &prev);
    let mut buckets = Box::new([BUCKET_UNASSIGNED; 256]);
    for (b, o) in owners.iter().enumerate() {
        if let Some(i) = o {
            buckets[b] = *i as u8;
        }
    }
    HashAssignment {
        caches: members.iter().map(|m| m.ip).collect(),
        buckets,
    }
}

fn bits(mask: MaskElement) -> u32 {
    mask.src_ip.count_ones()
        + mask.dst_ip.count_ones()
        + u32::from(mask.src_port).count_ones()
        + u32::from(mask.dst_port).count_ones()
}

/// Whether `mask` is usable: at least one bit, at most [`MAX_MASK_BITS`].
pub fn mask_is_valid(mask: MaskElement) -> bool {
    (1..=MAX_MASK_BITS).contains(&bits(mask))
}

/// Places the low bits of `index` onto the set bits of `mask`, lowest first.
fn deposit(mut index: u32, mask: u32) -> (u32, u32) {
    let mut out = 0u32;
    for bit in 0..32 {
        if mask & (1 << bit) != 0 {
            if index & 1 != 0 {
                out |= 1 << bit;
            }
            index >>= 1;
        }
    }
    (out, index)
}

/// Every value of `mask`, in a fixed order.
pub fn mask_values(mask: MaskElement) -> Vec<(u32, u32, u16, u16)> {
    let n = 1u32 << bits(mask).min(MAX_MASK_BITS);
    (0..n)
        .map(|i| {
            let (s, i) = deposit(i, mask.src_ip);
            let (d, i) = deposit(i, mask.dst_ip);
            let (sp, i) = deposit(i, u32::from(mask.src_port));
            let (dp, _) = deposit(i, u32::from(mask.dst_port));
            (s, d, sp as u16, dp as u16)
        })
        .collect()
}

/// The mask assignment for `members`: one mask/value set whose values are
/// spread like buckets.
pub fn mask_assignment(
    mask: MaskElement,
    members: &[Member],
    previous: Option<&[MaskValueSet]>,
) -> Vec<MaskValueSet> {
    let mut members = members.to_vec();
    members.sort_by_key(|m| m.ip);
    members.dedup_by_key(|m| m.ip);
    let values = mask_values(mask);
    let prev: Vec<Option<Ipv4Addr>> = values
        .iter()
        .map(|v| previous.and_then(|sets| lookup_value(sets, mask, *v)))
        .collect();
    let owners = spread(&members, values.len(), &prev);
    let values = values
        .iter()
        .zip(owners)
        .filter_map(|(&(s, d, sp, dp), o)| {
            o.map(|i| ValueElement {
                src_ip: s,
                dst_ip: d,
                src_port: sp,
                dst_port: dp,
                cache: members[i].ip,
            })
        })
        .collect();
    vec![MaskValueSet { mask, values }]
}

fn lookup_value(
    sets: &[MaskValueSet],
    mask: MaskElement,
    v: (u32, u32, u16, u16),
) -> Option<Ipv4Addr> {
    sets.iter()
        .filter(|s| s.mask == mask)
        .flat_map(|s| s.values.iter())
        .find(|e| (e.src_ip, e.dst_ip, e.src_port, e.dst_port) == v)
        .map(|e| e.cache)
}

/// Which cache a mask assignment sends a packet to (what the router does).
pub fn mask_target(
    sets: &[MaskValueSet],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
) -> Option<Ipv4Addr> {
    for s in sets {
        let key = (
            u32::from(src) & s.mask.src_ip,
            u32::from(dst) & s.mask.dst_ip,
            src_port & s.mask.src_port,
            dst_port & s.mask.dst_port,
        );
        if let Some(e) = s
            .values
            .iter()
            .find(|e| (e.src_ip, e.dst_ip, e.src_port, e.dst_port) == key)
        {
            return Some(e.cache);
        }
    }
    None
}

/// How many slots each cache holds in a hash assignment.
pub fn bucket_counts(a: &HashAssignment) -> Vec<(Ipv4Addr, usize)> {
    a.caches
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let n = a
                .buckets
                .iter()
                .filter(|&&b| b != BUCKET_UNASSIGNED && usize::from(b & 0x7f) == i)
                .count();
            (*ip, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(last: u8, weight: u16) -> Member {
        Member {
            ip: Ipv4Addr::new(10, 0, 0, last),
            weight,
        }
    }

    #[test]
    fn three_equal_caches_share_256_buckets_within_one() {
        let a = hash_assignment(&[m(3, 1), m(1, 1), m(2, 1)], None);
        let counts: Vec<usize> = bucket_counts(&a).into_iter().map(|(_, n)| n).collect();
        assert_eq!(counts, vec![86, 85, 85]);
        assert!(a.buckets.iter().all(|&b| b != BUCKET_UNASSIGNED));
    }

    #[test]
    fn weights_are_honoured() {
        let a = hash_assignment(&[m(1, 300), m(2, 100)], None);
        let counts: Vec<usize> = bucket_counts(&a).into_iter().map(|(_, n)| n).collect();
        assert_eq!(counts, vec![192, 64]);
        let z = hash_assignment(&[m(1, 1), m(2, 0)], None);
        assert_eq!(bucket_counts(&z)[1].1, 0);
    }

    #[test]
    fn a_leave_moves_only_the_leavers_buckets() {
        let three = hash_assignment(&[m(1, 1), m(2, 1), m(3, 1)], None);
        let two = hash_assignment(&[m(1, 1), m(3, 1)], Some(&three));
        for b in 0..=255u8 {
            let before = three.owner(b).unwrap();
            let after = two.owner(b).unwrap();
            if before != Ipv4Addr::new(10, 0, 0, 2) {
                assert_eq!(before, after, "bucket {b} moved needlessly");
            }
        }
        let counts: Vec<usize> = bucket_counts(&two).into_iter().map(|(_, n)| n).collect();
        assert_eq!(counts, vec![128, 128]);
    }

    #[test]
    fn default_mask_has_64_values_spread_evenly() {
        let mask = MaskElement {
            src_ip: DEFAULT_SOURCE_MASK,
            dst_ip: 0,
            src_port: 0,
            dst_port: 0,
        };
        assert!(mask_is_valid(mask));
        let sets = mask_assignment(mask, &[m(1, 1), m(2, 1)], None);
        assert_eq!(sets[0].values.len(), 64);
        let first = sets[0]
            .values
            .iter()
            .filter(|v| v.cache == Ipv4Addr::new(10, 0, 0, 1))
            .count();
        assert_eq!(first, 32);
        // Every source address lands on some cache.
        for last in 0..=255u8 {
            let src = Ipv4Addr::new(192, 168, last, last);
            assert!(mask_target(&sets, src, Ipv4Addr::new(1, 2, 3, 4), 1234, 80).is_some());
        }
    }

    #[test]
    fn masks_with_no_bits_or_too_many_are_invalid() {
        let mut mask = MaskElement {
            src_ip: 0,
            dst_ip: 0,
            src_port: 0,
            dst_port: 0,
        };
        assert!(!mask_is_valid(mask));
        mask.src_ip = 0xff;
        assert!(!mask_is_valid(mask));
    }
}
