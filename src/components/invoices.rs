//! The invoice table: a user's orders, each with its invoice to generate, wait for or
//! download.

use crate::api::billing::{GenerateInvoice, InvoiceView};
use leptos::prelude::*;

#[component]
pub fn InvoiceTable(rows: Vec<InvoiceView>, invoice: ServerAction<GenerateInvoice>) -> impl IntoView {
    view! {
        <div class="table-wrap">
            <table class="table">
                <caption class="visually-hidden">"Your orders and their invoices"</caption>
                <thead>
                    <tr>
                        <th scope="col">"Date"</th>
                        <th scope="col">"Description"</th>
                        <th scope="col">"Amount"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Invoice"</th>
                    </tr>
                </thead>
                <tbody>
                    {rows
                        .into_iter()
                        .map(|r| {
                            let label = format!("{} invoice for {} on {}", "Generate", r.description, r.date);
                            let download = format!("Download invoice for {} on {}", r.description, r.date);
                            let cell = match r.invoice.as_str() {
                                "ready" => {
                                    view! {
                                        <a
                                            class="btn btn--ghost btn--sm"
                                            href=format!("/billing/invoices/{}", r.order_id)
                                            aria-label=download
                                        >
                                            "Download"
                                        </a>
                                    }
                                        .into_any()
                                }
                                "preparing" => {
                                    view! {
                                        <span class="muted" data-testid="invoice-preparing">
                                            "Preparing… "
                                            <a href="/settings/billing#invoices-title">"Refresh"</a>
                                        </span>
                                    }
                                        .into_any()
                                }
                                "available" => {
                                    view! {
                                        <ActionForm action=invoice attr:class="inline-form">
                                            <input type="hidden" name="order_id" value=r.order_id.clone() />
                                            <button type="submit" class="btn btn--ghost btn--sm" aria-label=label>
                                                "Generate"
                                            </button>
                                        </ActionForm>
                                    }
                                        .into_any()
                                }
                                _ => view! { <span class="muted">"Not available"</span> }.into_any(),
                            };
                            view! {
                                <tr>
                                    <td>{r.date}</td>
                                    <td>{r.description}</td>
                                    <td>{r.amount}</td>
                                    <td>{r.status}</td>
                                    <td>{cell}</td>
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        </div>
    }
}
