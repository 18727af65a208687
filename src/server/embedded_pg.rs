//! The project-local PostgreSQL used when `DATABASE_URL` is unset.
//!
//! On first use it runs `initdb` into a git-ignored folder (default `.data/pg`); later starts
//! reuse the data, and a cluster that is already running is reused as it is. PostgreSQL refuses
//! to run as root, so when this process is root the server runs as the `postgres` system user
//! (Debian's PostgreSQL packages create it). Authentication is `trust` on 127.0.0.1 only: this
//! is a development database, never a deployment one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error("PostgreSQL server binaries not found (looked for initdb in $PG_BIN, /usr/lib/postgresql/*/bin and PATH). Install them with `apt-get install postgresql`, or set DATABASE_URL to an existing database.")]
    NoBinaries,
    #[error("`{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running cluster and how to reach it.
#[derive(Debug, Clone)]
pub struct EmbeddedPg {
    pub data_dir: PathBuf,
    pub port: u16,
    bin_dir: PathBuf,
    run_as_postgres: bool,
}

impl EmbeddedPg {
    /// URL of database `db` on this cluster (superuser `postgres`, trust auth on loopback).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the cluster in `root` (creating it if needed) or reuses the running one.
    /// `preferred_port` is used unless another program holds it.
    pub fn ensure(root: &Path, preferred_port: u16) -> Result<EmbeddedPg, EmbeddedPgError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedPgError::NoBinaries)?;
        let run_as_postgres = is_root();
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let data_dir = root.join("data");
        let sock_dir = root.join("sock");
        let mut pg = EmbeddedPg { data_dir: data_dir.clone(), port: preferred_port, bin_dir, run_as_postgres };

        if !data_dir.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&data_dir)?;
            std::fs::create_dir_all(&sock_dir)?;
            if run_as_postgres {
                pg.run("chown", &["-R".into(), "postgres:postgres".into(), root.display().to_string()], false)?;
            }
            pg.run("chmod", &["700".into(), data_dir.display().to_string()], true)?;
            pg.run_pg(
                "initdb",
                &[
                    "-D".into(),
                    data_dir.display().to_string(),
                    "-U".into(),
                    "postgres".into(),
                    "--auth=trust".into(),
                    "--encoding=UTF8".into(),
                    "--locale=C.UTF-8".into(),
                ],
            )?;
        }

        if let Some(port) = pg.running_port() {
            pg.port = port;
            return Ok(pg);
        }
        // A stale pid file from a killed server would make pg_ctl refuse to start: pg_ctl
        // checks that itself, so we only pick a port and start.
        pg.port = if port_is_free(preferred_port) { preferred_port } else { free_port()? };
        let log = root.join("server.log");
        pg.run_pg(
            "pg_ctl",
            &[
                "-D".into(),
                data_dir.display().to_string(),
                "-l".into(),
                log.display().to_string(),
                "-w".into(),
                "-t".into(),
                "60".into(),
                "-o".into(),
                format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
                    pg.port,
                    sock_dir.display()
                ),
                "start".into(),
            ],
        )
        .map_err(|e| match e {
            EmbeddedPgError::Command { cmd, detail } => EmbeddedPgError::Command {
                cmd,
                detail: format!("{detail}\n(see {} for the server's own log)", log.display()),
            },
            other => other,
        })?;
        Ok(pg)
    }

    /// Stops the cluster (fast shutdown). Used by scripts and tests; the app leaves it running
    /// so the next start is instant.
    pub fn stop(&self) -> Result<(), EmbeddedPgError> {
        self.run_pg(
            "pg_ctl",
            &["-D".into(), self.data_dir.display().to_string(), "-m".into(), "fast".into(), "-w".into(), "stop".into()],
        )
    }

    /// The port of the postmaster running on our data dir, if one is alive.
    fn running_port(&self) -> Option<u16> {
        let status = self
            .pg_command("pg_ctl", &["-D".into(), self.data_dir.display().to_string(), "status".into()])
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
        // postmaster.pid line 4 is the port (PostgreSQL's documented pid-file layout).
        let pid = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid.lines().nth(3)?.trim().parse().ok()
    }

    fn pg_command(&self, tool: &str, args: &[String]) -> Command {
        let exe = self.bin_dir.join(tool);
        if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe).args(args);
            c
        } else {
            let mut c = Command::new(exe);
            c.args(args);
            c
        }
    }

    fn run_pg(&self, tool: &str, args: &[String]) -> Result<(), EmbeddedPgError> {
        let out = self.pg_command(tool, args).output()?;
        check(tool, out)
    }

    fn run(&self, cmd: &str, args: &[String], as_postgres: bool) -> Result<(), EmbeddedPgError> {
        let out = if as_postgres && self.run_as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--", cmd]).args(args).output()?
        } else {
            Command::new(cmd).args(args).output()?
        };
        check(cmd, out)
    }
}

fn check(cmd: &str, out: std::process::Output) -> Result<(), EmbeddedPgError> {
    if out.status.success() {
        Ok(())
    } else {
        Err(EmbeddedPgError::Command {
            cmd: cmd.to_string(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Path of a PostgreSQL program (`pgbench`, `psql`, …) from the same installation as initdb.
pub fn pg_tool(name: &str) -> Option<PathBuf> {
    find_bin_dir().map(|d| d.join(name)).filter(|p| p.exists())
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        let p = PathBuf::from(dir);
        if p.join("initdb").exists() {
            return Some(p);
        }
    }
    // Debian/Ubuntu: /usr/lib/postgresql/<major>/bin; take the newest major.
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    if let Some((_, bin)) = majors.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
