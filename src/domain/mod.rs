//! Pure types and rules shared by the server and the browser. Nothing here touches I/O,
//! so everything is unit-tested without a database.

pub mod countries;
pub mod credits;
pub mod email;
pub mod money;
pub mod plans;
pub mod tax_id;
pub mod text_stats;
pub mod usage;
