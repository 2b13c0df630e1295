//! Metric values keyed for pairing: by seed within an experiment, by (cell,
//! seed) when experiments are pooled. A sorted vector rather than a map: a
//! ten-million-run report keeps thirty million of them (ARCHITECTURE.md, "Scale").

/// Values sorted by key, no key twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyed<K> {
    entries: Vec<(K, f64)>,
}

impl<K> Default for Keyed<K> {
    fn default() -> Self {
        Keyed {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord + Copy> Keyed<K> {
    /// Of a key given twice the later value stands, as in a map.
    pub fn from_pairs(mut entries: Vec<(K, f64)>) -> Self {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: among equal keys the later pair stays later, and is kept.
            entries.sort_by_key(|(key, _)| *key);
            entries.reverse();
            entries.dedup_by_key(|(key, _)| *key);
            entries.reverse();
        }
        entries.shrink_to_fit();
        Keyed { entries }
    }

    /// In order of key.
    pub fn iter(&self) -> impl Iterator<Item = (K, f64)> + '_ {
        self.entries.iter().copied()
    }

    /// In order of key.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.entries.iter().map(|(_, value)| *value)
    }

    /// Values of the keys both have, matched by a merge of the two orders.
    pub fn pair_with(&self, other: &Keyed<K>) -> (Vec<f64>, Vec<f64>) {
        let (mut pairs_a, mut pairs_b) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while let (Some((key_a, value_a)), Some((key_b, value_b))) =
            (self.entries.get(i), other.entries.get(j))
        {
            match key_a.cmp(key_b) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    pairs_a.push(*value_a);
                    pairs_b.push(*value_b);
                    i += 1;
                    j += 1;
                }
            }
        }
        (pairs_a, pairs_b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_the_later_of_a_repeated_key_stands() {
        let keyed = Keyed::from_pairs(vec![(3u64, 1.0), (1, 2.0), (3, 5.0), (2, 4.0), (1, 7.0)]);
        assert_eq!(
            keyed.iter().collect::<Vec<_>>(),
            [(1, 7.0), (2, 4.0), (3, 5.0)]
        );
    }

    #[test]
    fn pairs_are_the_keys_both_sides_have() {
        let a = Keyed::from_pairs(vec![(1u64, 1.0), (2, 2.0), (4, 4.0), (6, 6.0)]);
        let b = Keyed::from_pairs(vec![(2u64, 20.0), (3, 30.0), (4, 40.0), (7, 70.0)]);
        assert_eq!(a.pair_with(&b), (vec![2.0, 4.0], vec![20.0, 40.0]));
        assert_eq!(b.pair_with(&a), (vec![20.0, 40.0], vec![2.0, 4.0]));
        assert_eq!(a.pair_with(&Keyed::default()), (vec![], vec![]));
    }
}
