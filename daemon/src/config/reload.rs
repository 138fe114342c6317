//! Live config reload: the daemon reads its config file again when the file
//! changes, on SIGHUP, and on `config/reload`, and applies it only if it is
//! valid.
//!
//! One task owns reloading, so reloads never interleave: triggers queue up
//! and each is handled in turn. A reload reads the file, validates it with the
//! same code as `corral config check`, and then either
//! - publishes `config/reloadFailed` with every problem and keeps running the
//!   config it had (a broken save never stops a working server), or
//! - hands the new config to the supervisor, which restarts only the servers
//!   whose entry changed, starts the added ones, stops the removed ones, and
//!   leaves every other server (and its in-flight calls) alone; then
//!   publishes `config/reloaded` naming what changed.
//!
//! Watching is a poll of the file's metadata (`stat` once a second), not
//! inotify. Editors save by writing a new file and renaming it over the old
//! one (vim, VS Code, JetBrains, `sed -i`), config managers swap symlinks
//! (home-manager, stow, Kubernetes config maps), and the config directory
//! may not exist yet when corrald starts: an inotify watch on the file is
//! lost at the first rename, one on the directory misses symlink swaps and
//! cannot be set on a missing directory. A `stat` of the path follows all of
//! these, costs a few microseconds a second, and needs no extra dependency.
//! When the metadata (inode, size, modification and change times) differs,
//! the file is read once it stops changing, and reloaded only if its bytes
//! differ from those last read (`touch` reloads nothing; SIGHUP and
//! `config/reload` always reload).
//!
//! Triggers queue on a bounded channel (4): a SIGHUP that finds it full is
//! dropped, since a queued reload will read the newest file anyway. The
//! reloader holds the sending side of the config-error `watch` made at boot;
//! `daemon/status.configError` (the API) and the service task's status line
//! read receivers, so `service` never names `config`. Around applying a
//! valid file the service manager is told `RELOADING=1`, then `READY=1`.
//! Daemon-wide keys (`settings`) are read once at startup: a reload that
//! changes one only warns (in `config/reloaded`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use corral_protocol::config;
use corral_protocol::{ConfigReloadFailed, ConfigReloadResult, ConfigReloaded, DaemonNotification, ReloadTrigger};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::service::{self, Notice, Notifier};
use crate::supervisor::{SupervisorHandle, SupervisorStopped};

use super::settings::DaemonSettings;

/// How often the config file's metadata is checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// After a change is seen, how long the file must stay unchanged before it is
/// read (an editor writing in place may need more than one `write`).
const SETTLE: Duration = Duration::from_millis(150);

/// Most settle rounds before a file that keeps changing is read anyway.
const MAX_SETTLE_ROUNDS: u32 = 20;

/// Why the config file could not be used the last time it was read: what
/// `daemon/status.configError` reports. The reloader owns the sending side;
/// the API and the service-manager task hold receivers (created at boot), so
/// neither needs anything of this module.
pub type ConfigError = Option<String>;

/// A reload request: what triggered it, and where to send the result.
#[derive(Debug)]
struct ReloadRequest {
    trigger: ReloadTrigger,
    reply: Option<oneshot::Sender<ConfigReloadResult>>,
}

/// Cloneable handle to the reloader task.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    requests: mpsc::Sender<ReloadRequest>,
}

impl ReloadHandle {
    /// Reload now and wait for the outcome.
    pub async fn reload(&self, trigger: ReloadTrigger) -> Result<ConfigReloadResult, SupervisorStopped> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(ReloadRequest {
                trigger,
                reply: Some(reply),
            })
            .await
            .map_err(|_| SupervisorStopped)?;
        answer.await.map_err(|_| SupervisorStopped)
    }

    /// Ask for a reload without waiting (SIGHUP). A full queue already holds a
    /// reload that will read the newest file, so dropping this one loses nothing.
    pub fn request(&self, trigger: ReloadTrigger) {
        let _ = self.requests.try_send(ReloadRequest { trigger, reply: None });
    }
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fingerprint {
    Missing,
    /// The path exists but cannot be inspected (permissions…): read it to get the error.
    Unreadable(String),
    Present {
        #[cfg(unix)]
        device_inode: (u64, u64),
        #[cfg(unix)]
        changed: (i64, i64),
        len: u64,
        modified: Option<SystemTime>,
    },
}

fn fingerprint(path: &Path) -> Fingerprint {
    match std::fs::metadata(path) {
        Ok(metadata) => {
            #[cfg(unix)]
            use std::os::unix::fs::MetadataExt as _;
            Fingerprint::Present {
                #[cfg(unix)]
                device_inode: (metadata.dev(), metadata.ino()),
                #[cfg(unix)]
                changed: (metadata.ctime(), metadata.ctime_nsec()),
                len: metadata.len(),
                modified: metadata.modified().ok(),
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Fingerprint::Missing,
        Err(error) => Fingerprint::Unreadable(error.kind().to_string()),
    }
}

/// The file's bytes, `None` if it does not exist.
fn read_bytes(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Everything the reloader task owns.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    supervisor: SupervisorHandle,
    hub: Arc<Hub>,
    config_error: watch::Sender<ConfigError>,
    /// Tells a service manager a reload is under way (`RELOADING=1`) and done.
    notifier: Notifier,
    requests: mpsc::Receiver<ReloadRequest>,
    /// Metadata when the file was last read.
    seen: Fingerprint,
    /// Bytes last read (`None`: the file did not exist or could not be read).
    last_bytes: Option<Vec<u8>>,
    poll_interval: Duration,
    /// The daemon-wide settings corrald started with, which a reload cannot change.
    startup_settings: DaemonSettings,
}

/// The config file as it was just before the daemon first loaded it.
#[derive(Debug)]
pub struct FileSnapshot {
    seen: Fingerprint,
    bytes: Option<Vec<u8>>,
}

impl FileSnapshot {
    /// Take it before loading the file, so that a change made between this
    /// call and the load is seen as a change (at worst one reload too many,
    /// never one lost).
    pub fn take(path: &Path) -> Self {
        Self {
            seen: fingerprint(path),
            bytes: read_bytes(path).ok().flatten(),
        }
    }
}

/// What the reloader is given at boot.
#[derive(Debug)]
pub struct ReloaderSpec {
    /// The config file.
    pub path: PathBuf,
    /// The file as it was just before the daemon first loaded it.
    pub snapshot: FileSnapshot,
    /// Who applies a new config.
    pub supervisor: SupervisorHandle,
    /// Where `config/reloaded` and `config/reloadFailed` are published.
    pub hub: Arc<Hub>,
    /// The sending side of `daemon/status.configError`.
    pub config_error: watch::Sender<ConfigError>,
    /// The service manager, told about each reload.
    pub notifier: Notifier,
    /// How often the file is checked for changes.
    pub poll_interval: Duration,
    /// The daemon-wide settings corrald started with.
    pub startup_settings: DaemonSettings,
}

/// Set up the reloader for `spec.path`, which the daemon loaded after taking `spec.snapshot`.
pub fn prepare(spec: ReloaderSpec) -> (Reloader, ReloadHandle) {
    let (sender, requests) = mpsc::channel(4);
    let ReloaderSpec {
        path,
        snapshot: FileSnapshot {
            seen,
            bytes: last_bytes,
        },
        supervisor,
        hub,
        config_error,
        notifier,
        poll_interval,
        startup_settings,
    } = spec;
    let reloader = Reloader {
        path,
        supervisor,
        hub,
        config_error,
        notifier,
        requests,
        seen,
        last_bytes,
        poll_interval,
        startup_settings,
    };
    (reloader, ReloadHandle { requests: sender })
}

impl Reloader {
    /// Handle reload requests and watch the file until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                request = self.requests.recv() => {
                    let Some(request) = request else { return };
                    let result = self.reload(request.trigger).await;
                    if let (Some(reply), Some(result)) = (request.reply, result) {
                        let _ = reply.send(result);
                    }
                }
                _ = tick.tick() => {
                    if fingerprint(&self.path) != self.seen && self.settle(&shutdown).await {
                        let _ = self.reload(ReloadTrigger::File).await;
                    }
                }
            }
        }
    }

    /// Wait until the file stops changing; `false` if shutdown came first.
    async fn settle(&self, shutdown: &CancellationToken) -> bool {
        let mut last = fingerprint(&self.path);
        for _ in 0..MAX_SETTLE_ROUNDS {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(SETTLE) => {}
            }
            let now = fingerprint(&self.path);
            if now == last {
                break;
            }
            last = now;
        }
        true
    }

    /// Read, validate and apply the file; `None` only when the daemon is stopping.
    async fn reload(&mut self, trigger: ReloadTrigger) -> Option<ConfigReloadResult> {
        let path_text = self.path.display().to_string();
        self.seen = fingerprint(&self.path);
        let bytes = match read_bytes(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                let error = format!("cannot read config file {path_text}: {error}");
                return Some(self.refuse(trigger, error));
            }
        };
        if trigger == ReloadTrigger::File && bytes == self.last_bytes && self.config_error.borrow().is_none() {
            tracing::debug!(config = %path_text, "config file touched but its content is the same; nothing to do");
            return None;
        }
        self.last_bytes = bytes.clone();
        // Validate with the same code as the first load and `corral config check`.
        let loaded = match bytes {
            None => Ok(config::Config::default()),
            Some(_) => config::load(&self.path),
        };
        let config = match loaded {
            Ok(config) => config,
            Err(error) => return Some(self.refuse(trigger, error.to_string())),
        };
        let settings_warnings = self.startup_settings.changed_in(&DaemonSettings::of(&config));
        self.notifier.notify(Notice::Reloading);
        let mut diff = match self.supervisor.apply_config(config).await {
            Ok(diff) => diff,
            Err(SupervisorStopped) => return None,
        };
        diff.warnings.extend(settings_warnings);
        self.config_error.send_replace(None);
        tracing::info!(
            config = %path_text,
            ?trigger,
            added = ?diff.added,
            removed = ?diff.removed,
            changed = ?diff.changed,
            "config reloaded"
        );
        let mut notification = None;
        self.hub.events.publish(|seq| {
            let reloaded = ConfigReloaded::new(
                seq,
                path_text.clone(),
                trigger,
                diff.added.clone(),
                diff.removed.clone(),
                diff.changed.clone(),
                diff.warnings.clone(),
            );
            notification = Some(reloaded.clone());
            DaemonNotification::ConfigReloaded(reloaded)
        });
        let counts = self.supervisor.counts().await.unwrap_or_default();
        self.notifier
            .notify(Notice::Ready(&service::status_line(&counts, false)));
        notification.as_ref().map(ConfigReloadResult::applied)
    }

    /// Keep the running config; tell front-ends exactly what is wrong.
    fn refuse(&mut self, trigger: ReloadTrigger, error: String) -> ConfigReloadResult {
        tracing::error!(config = %self.path.display(), ?trigger, "config not reloaded, keeping the running config:\n{error}");
        self.config_error.send_replace(Some(error.clone()));
        let path_text = self.path.display().to_string();
        let mut notification = None;
        self.hub.events.publish(|seq| {
            let failed = ConfigReloadFailed::new(seq, path_text.clone(), trigger, error.clone());
            notification = Some(failed.clone());
            DaemonNotification::ConfigReloadFailed(failed)
        });
        match notification {
            Some(failed) => ConfigReloadResult::failed(&failed),
            None => ConfigReloadResult::failed(&ConfigReloadFailed::new(0, path_text, trigger, error)),
        }
    }
}
