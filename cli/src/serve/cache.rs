//! The prefix cache: the states of recent sequences, keyed by the tokens they have consumed.
//! A request whose prompt starts with a cached sequence's tokens continues from a copy of its
//! state and feeds only the rest.

/// At most this many bytes of cached states, whatever the entry count asks for.
const MAX_BYTES: usize = 1 << 30;

/// States `S` (a `liger::model::SequenceState`) by the tokens they consumed.
pub(crate) struct PrefixCache<S> {
    /// (tokens consumed, state after them), least recently used first.
    entries: Vec<(Vec<u32>, S)>,
    capacity: usize,
}

impl<S: Clone> PrefixCache<S> {
    /// A cache of up to `entries` states of `state_bytes` each (fewer if they would pass 1 GiB).
    pub(crate) fn new(entries: usize, state_bytes: usize) -> PrefixCache<S> {
        let capacity = entries.min(MAX_BYTES / state_bytes.max(1));
        PrefixCache {
            entries: Vec::new(),
            capacity,
        }
    }

    /// A copy of the state of the longest cached sequence that is a prefix of `prompt` (all of
    /// it, possibly: the state holds the logits after its last token), and its length.
    pub(crate) fn longest_prefix(&mut self, prompt: &[u32]) -> Option<(S, usize)> {
        let best = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (tokens, _))| prompt.starts_with(tokens) && !tokens.is_empty())
            .max_by_key(|(_, (tokens, _))| tokens.len())
            .map(|(i, _)| i)?;
        let entry = self.entries.remove(best);
        let found = (entry.1.clone(), entry.0.len());
        self.entries.push(entry);
        Some(found)
    }

    /// Records the state after `tokens` (replacing an entry of the same tokens), evicting the
    /// least recently used beyond capacity. Shorter prefixes stay: another request may branch
    /// from them.
    pub(crate) fn insert(&mut self, tokens: Vec<u32>, session: S) {
        if self.capacity == 0 {
            return;
        }
        self.entries.retain(|(t, _)| t != &tokens);
        self.entries.push((tokens, session));
        while self.entries.len() > self.capacity {
            self.entries.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_least_recently_used_goes() {
        let mut c = PrefixCache::new(3, 1);
        c.insert(vec![1, 2], "a");
        c.insert(vec![1, 2, 3, 4], "b");
        c.insert(vec![7], "c");
        assert_eq!(c.longest_prefix(&[1, 2, 3, 4, 5]), Some(("b", 4)));
        assert_eq!(c.longest_prefix(&[1, 2, 3]), Some(("a", 2)));
        assert_eq!(
            c.longest_prefix(&[1, 2, 3, 4]),
            Some(("b", 4)),
            "a whole prompt"
        );
        assert_eq!(c.longest_prefix(&[2, 1]), None);
        // [7] is now the least recently used: a fourth entry evicts it.
        c.insert(vec![9, 9], "d");
        assert_eq!(c.longest_prefix(&[7, 1]), None);
        assert_eq!(c.longest_prefix(&[9, 9, 9]), Some(("d", 2)));
        // The same tokens again replace their entry.
        c.insert(vec![9, 9], "e");
        assert_eq!(c.longest_prefix(&[9, 9]), Some(("e", 2)));
        // The byte bound caps the entry count.
        let mut small: PrefixCache<&str> = PrefixCache::new(16, 1 << 29);
        small.insert(vec![1], "x");
        small.insert(vec![2], "y");
        small.insert(vec![3], "z");
        assert_eq!(small.longest_prefix(&[1]), None);
    }
}
