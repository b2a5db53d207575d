//! How many uploads may run at once, in all and per tenant.
//!
//! An upload holds a database connection (and its campaign's lock) for as long as its body
//! streams. Without a cap, one tenant's stalled uploads took every connection of the pool,
//! and every other tenant got errors. So uploads take a slot first, without waiting: at most
//! `per_tenant` for one tenant (operators count as one), at most `all` in all, and `all`
//! is kept below the pool's size so other requests always find a connection.

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct UploadSlots {
    all: usize,
    per_tenant: usize,
    running: Arc<Mutex<Running>>,
}

#[derive(Debug, Default)]
struct Running {
    total: usize,
    /// By tenant; `None` is the operators'.
    by_tenant: HashMap<Option<Uuid>, usize>,
}

/// An upload's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    tenant: Option<Uuid>,
    running: Arc<Mutex<Running>>,
}

impl UploadSlots {
    pub fn new(all: usize, per_tenant: usize) -> Self {
        Self {
            all: all.max(1),
            per_tenant: per_tenant.max(1),
            running: Arc::default(),
        }
    }

    /// A slot for `tenant`'s upload, or 429 with when to try again.
    pub fn take(&self, tenant: Option<Uuid>) -> Result<Slot, ApiError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = running.by_tenant.get(&tenant).copied().unwrap_or(0);
        if mine >= self.per_tenant {
            return Err(ApiError::Busy {
                message: format!(
                    "{mine} uploads of this tenant are running; at most {} at once",
                    self.per_tenant
                ),
                retry_after: 5,
            });
        }
        if running.total >= self.all {
            return Err(ApiError::Busy {
                message: format!("{} uploads are running; try again shortly", running.total),
                retry_after: 5,
            });
        }
        running.total += 1;
        *running.by_tenant.entry(tenant).or_insert(0) += 1;
        Ok(Slot {
            tenant,
            running: self.running.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.total = running.total.saturating_sub(1);
        if let Some(n) = running.by_tenant.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_tenant_and_in_all_and_come_back() {
        let slots = UploadSlots::new(3, 2);
        let (a, b) = (Some(Uuid::from_u128(1)), Some(Uuid::from_u128(2)));
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(matches!(slots.take(a), Err(ApiError::Busy { .. })));
        let _third = slots.take(b).unwrap();
        assert!(
            matches!(slots.take(None), Err(ApiError::Busy { .. })),
            "3 in all"
        );
        drop(first);
        assert!(slots.take(None).is_ok());
        assert!(slots.take(a).is_ok());
    }
}
