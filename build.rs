// `sqlx::migrate!` embeds migrations/ when the crate compiles: rebuild when a migration is
// added or changed, not only when a source file is (sqlx's documented build script).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
