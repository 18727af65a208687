//! What Tally sells, as Polar products: built once from the configuration (`POLAR_PRODUCT_*`,
//! or the stand-in's catalogue in local mode), it maps each product id to a domain
//! [`Item`](crate::domain::plans::Item) and back. Nothing else reads product ids.

use crate::domain::plans::{Interval, Item, PlanId};
use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    products: HashMap<Item, String>,
    items: HashMap<String, Item>,
}

impl Catalog {
    /// The catalogue of these `(item, product id)` pairs; an item without a product is not sold.
    pub fn new(pairs: impl IntoIterator<Item = (Item, Option<String>)>) -> Catalog {
        let mut c = Catalog::default();
        for (item, product) in pairs {
            if let Some(p) = product {
                c.items.insert(p.clone(), item);
                c.products.insert(item, p);
            }
        }
        c
    }

    /// The Polar product sold as `item`, if this server sells it.
    pub fn product(&self, item: Item) -> Option<&str> {
        self.products.get(&item).map(String::as_str)
    }

    /// What a Polar product is, if it is one of ours.
    pub fn item(&self, product_id: &str) -> Option<Item> {
        self.items.get(product_id).copied()
    }

    /// The product of `plan` billed by `interval`.
    pub fn plan_product(&self, plan: PlanId, interval: Interval) -> Option<&str> {
        self.product(Item::Plan { plan, interval })
    }

    /// Whether `plan` is sold billed yearly (the pricing page's switch).
    pub fn sells_yearly(&self, plan: PlanId) -> bool {
        self.plan_product(plan, Interval::Year).is_some()
    }
}

/// The local stand-in's product id of an item (its slug, e.g. `pro_yearly`): the same on every
/// start, so local mode's catalogue and bookmarks survive restarts.
pub fn standin_product_id(slug: &str) -> String {
    stable_uuid(&format!("product/{slug}"))
}

/// The local stand-in's meter of `credits.overage` events, which its plans' metered prices
/// bill: local mode's `POLAR_OVERAGE_METER_ID`.
pub fn standin_overage_meter_id() -> String {
    stable_uuid("meter:credits-overage")
}

/// A stable id derived from a name (a hash, shaped as a UUID v4 like every id Polar hands out).
pub fn stable_uuid(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("tally/polar-standin/{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_and_items_map_both_ways() {
        let pro = Item::Plan { plan: PlanId::Pro, interval: Interval::Month };
        let c = Catalog::new([
            (pro, Some("p-1".into())),
            (Item::Pack { credits: 50 }, Some("k-50".into())),
            (Item::Pack { credits: 100 }, None),
        ]);
        assert_eq!(c.product(pro), Some("p-1"));
        assert_eq!(c.item("k-50"), Some(Item::Pack { credits: 50 }));
        assert_eq!(c.item("unknown"), None);
        assert_eq!(c.product(Item::Pack { credits: 100 }), None, "not sold without a product");
        assert!(!c.sells_yearly(PlanId::Pro));
    }
}
