//! A hash map split into independently locked shards, so that lookups from many
//! connections at once rarely wait on each other and no lock is global.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub struct Shards<K, V> {
    hasher: RandomState,
    shards: Box<[RwLock<HashMap<K, V>>]>,
}

impl<K: Hash + Eq, V: Clone> Shards<K, V> {
    pub fn new(count: usize) -> Shards<K, V> {
        let count = count.max(1).next_power_of_two();
        Shards {
            hasher: RandomState::new(),
            shards: (0..count).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<HashMap<K, V>> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h & (self.shards.len() - 1)]
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        read(self.shard(key)).get(key).cloned()
    }

    /// The value for `key`, inserting `make()` if there is none.
    pub fn get_or_insert_with<Q>(&self, key: &Q, make: impl FnOnce() -> (K, V)) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.get(key) {
            return v;
        }
        let mut shard = write(self.shard(key));
        if let Some(v) = shard.get(key) {
            return v.clone();
        }
        let (k, v) = make();
        shard.insert(k, v.clone());
        v
    }

    pub fn insert(&self, key: K, value: V) {
        write(self.shard(&key)).insert(key, value);
    }

    /// Removes `key` if `pred` holds for its value.
    pub fn remove_if<Q>(&self, key: &Q, pred: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = write(self.shard(key));
        if shard.get(key).is_some_and(pred) {
            shard.remove(key)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every key and value.
    pub fn entries(&self) -> Vec<(K, V)>
    where
        K: Clone,
    {
        self.shards
            .iter()
            .flat_map(|s| {
                read(s)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A snapshot of every value.
    pub fn values(&self) -> Vec<V> {
        self.shards
            .iter()
            .flat_map(|s| read(s).values().cloned().collect::<Vec<_>>())
            .collect()
    }
}

// The maps hold plain data; a panic elsewhere cannot leave them half-updated.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
