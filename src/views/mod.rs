//! What pages show, as data: the views the server builds (`server::…`) and the browser
//! renders, exchanged through the server functions (`api::…`). Plain serializable data, below
//! both, so the server never imports the `api` layer above it.

pub mod account;
