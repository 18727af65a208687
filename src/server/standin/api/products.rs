//! `/v1/products/`: the catalogue.

use super::*;

pub(super) async fn list_products(State(s): State<StandIn>, Query(q): Query<Vec<(String, String)>>) -> Response {
    s.read(|w, _| {
        let recurring = query_values(&q, "is_recurring").next();
        let ids: Vec<&str> = query_values(&q, "id").collect();
        let items: Vec<Value> = w
            .products
            .iter()
            .filter(|p| match recurring {
                Some("true") => p.recurring_interval.is_some(),
                Some("false") => p.recurring_interval.is_none(),
                _ => true,
            })
            .filter(|p| ids.is_empty() || ids.contains(&p.id.as_str()))
            .map(|p| w.product_json(p))
            .collect();
        list_page(items, &q)
    })
}

pub(super) async fn get_product(State(s): State<StandIn>, Path(id): Path<String>) -> Response {
    if let Err(r) = uuid_path(&id) {
        return r;
    }
    s.read(|w, _| match w.product(&id) {
        Some(p) => Json(w.product_json(p)).into_response(),
        None => not_found(),
    })
}
