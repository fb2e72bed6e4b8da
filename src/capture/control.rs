//! Capture sessions started and stopped while the daemon runs (the API's `POST
//! /api/session/start` and `/stop`): at most one at a time, on its own thread, writing into the
//! captures folder the pipeline watches, so its stills take the same road as WANDA's own.
//!
//! The camera is opened on the capture thread (a V4L2 device's buffers are not `Send`), and a
//! stop request is seen between stills and within a second of a timed mode's wait.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{run_session, CaptureConfig, ModeKind, SessionReport, Source, SourceKind};
use crate::pipeline::events::{Event, EventKind, Events};

/// The test source's still size when the daemon captures (as `capture --size`'s default).
pub const TEST_STILL_BYTES: usize = 5_000_000;

/// What a start request may set; the rest comes from `[capture]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The session's name (free text, one folder name).
    pub session: String,
    #[serde(default)]
    pub mode: Option<ModeKind>,
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub interval_secs: Option<f64>,
    #[serde(default)]
    pub hours: Option<f64>,
}

/// Where capture stands, as the API reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CaptureStatus {
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The source in the config (`rpicam`, `v4l2`, `test`).
    pub source: String,
    /// Whether a captures folder is configured (without one, nothing can start).
    pub available: bool,
    /// How the last session ended, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Stills the last finished session took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_captured: Option<u32>,
}

/// Why a request could not be carried out.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ControlError {
    #[error("no captures folder is configured (set pipeline.captures_dir or daemon --watch): there is nowhere to write stills")]
    NoFolder,
    #[error("a capture session is already running ({0:?}); stop it first")]
    Busy(String),
    #[error("no capture session is running")]
    NotRunning,
    #[error("{0}")]
    Invalid(String),
}

struct Running {
    session: String,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    running: Option<Running>,
    last_error: Option<String>,
    last_captured: Option<u32>,
}

/// The daemon's capture switch. Cheap to clone.
#[derive(Clone)]
pub struct CaptureControl {
    folder: Option<PathBuf>,
    cfg: Arc<CaptureConfig>,
    events: Events,
    state: Arc<Mutex<State>>,
}

impl CaptureControl {
    pub fn new(folder: Option<PathBuf>, cfg: CaptureConfig, events: Events) -> CaptureControl {
        CaptureControl {
            folder,
            cfg: Arc::new(cfg),
            events,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn status(&self) -> CaptureStatus {
        let st = self.lock();
        CaptureStatus {
            running: st.running.is_some(),
            session: st.running.as_ref().map(|r| r.session.clone()),
            source: self.cfg.source.as_str().to_string(),
            available: self.folder.is_some(),
            last_error: st.last_error.clone(),
            last_captured: st.last_captured,
        }
    }

    /// The `[capture]` settings with the request's on top, each checked as its config key is.
    fn settings(&self, req: &StartRequest) -> Result<CaptureConfig, ControlError> {
        let bad = |name: &str, r: Result<(), String>| {
            r.map_err(|m| ControlError::Invalid(format!("{name} {m}")))
        };
        crate::session::check_session_name(&req.session).map_err(ControlError::Invalid)?;
        let mut c = (*self.cfg).clone();
        if let Some(m) = req.mode {
            c.mode = m;
        }
        if let Some(v) = req.count {
            bad("count", super::check_count(v))?;
            c.count = v;
        }
        if let Some(v) = req.interval_secs {
            bad("interval_secs", super::check_interval_secs(v))?;
            c.interval_secs = v;
        }
        if let Some(v) = req.hours {
            bad("hours", super::check_hours(v))?;
            c.hours = v;
        }
        c.schedule().map_err(ControlError::Invalid)?;
        Ok(c)
    }

    /// Starts a session on its own thread; returns once it is under way (the camera opens on
    /// that thread: a camera that fails is reported in the status and a `capture_stopped` event).
    pub fn start(&self, req: &StartRequest) -> Result<CaptureStatus, ControlError> {
        let folder = self.folder.clone().ok_or(ControlError::NoFolder)?;
        let settings = self.settings(req)?;
        let mode = settings.schedule().map_err(ControlError::Invalid)?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut st = self.lock();
            if let Some(r) = &st.running {
                return Err(ControlError::Busy(r.session.clone()));
            }
            st.running = Some(Running {
                session: req.session.clone(),
                stop: stop.clone(),
            });
            st.last_error = None;
        }
        let this = self.clone();
        let session = req.session.clone();
        let spawned = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let result = open_source(&settings).and_then(|mut src| {
                    run_session(src.as_mut(), &folder, &session, mode, &|| {
                        stop.load(Ordering::Relaxed)
                    })
                });
                this.finished(&session, result);
            });
        if let Err(e) = spawned {
            self.lock().running = None;
            return Err(ControlError::Invalid(format!(
                "cannot start the capture thread: {e}"
            )));
        }
        tracing::info!(session = %req.session, source = self.cfg.source.as_str(), "capture started");
        self.events
            .emit(Event::new(EventKind::CaptureStarted, &req.session));
        Ok(self.status())
    }

    fn finished(&self, session: &str, result: anyhow::Result<SessionReport>) {
        let mut ev = Event::new(EventKind::CaptureStopped, session);
        {
            let mut st = self.lock();
            st.running = None;
            match &result {
                Ok(r) => {
                    st.last_captured = Some(r.captured);
                    tracing::info!(
                        session,
                        captured = r.captured,
                        late = r.late,
                        "capture ended"
                    );
                }
                Err(e) => {
                    let m = format!("{e:#}");
                    tracing::warn!(session, "capture failed: {m}");
                    ev = ev.error(&m);
                    st.last_error = Some(m);
                }
            }
        }
        self.events.emit(ev);
    }

    /// Asks the running session to stop after the still under way; returns at once.
    pub fn stop(&self) -> Result<CaptureStatus, ControlError> {
        {
            let st = self.lock();
            let r = st.running.as_ref().ok_or(ControlError::NotRunning)?;
            r.stop.store(true, Ordering::Relaxed);
        }
        Ok(self.status())
    }

    /// Stops a running session (daemon shutdown) and waits up to `within` for it to end.
    pub fn shutdown(&self, within: std::time::Duration) {
        if self.stop().is_err() {
            return;
        }
        let t0 = std::time::Instant::now();
        while self.lock().running.is_some() && t0.elapsed() < within {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The camera `settings` name, opened.
pub fn open_source(settings: &CaptureConfig) -> anyhow::Result<Box<dyn Source>> {
    open_test_or(settings, TEST_STILL_BYTES, 1)
}

/// As [`open_source`], with the test source's still size and seed given.
pub fn open_test_or(
    settings: &CaptureConfig,
    test_size: usize,
    test_seed: u64,
) -> anyhow::Result<Box<dyn Source>> {
    Ok(match settings.source {
        SourceKind::Test => Box::new(super::TestSource::new(test_size, test_seed)),
        SourceKind::Rpicam => Box::new(super::RpicamSource::new(&settings.rpicam_options())?),
        SourceKind::V4l2 => Box::new(super::V4l2Source::open(
            &settings.v4l2_options().map_err(anyhow::Error::msg)?,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn control(folder: Option<PathBuf>) -> CaptureControl {
        let cfg = CaptureConfig {
            source: SourceKind::Test,
            ..CaptureConfig::default()
        };
        CaptureControl::new(folder, cfg, Events::new())
    }

    fn req(session: &str) -> StartRequest {
        StartRequest {
            session: session.into(),
            count: Some(1000),
            interval_secs: Some(0.05),
            ..StartRequest::default()
        }
    }

    fn wait_idle(c: &CaptureControl) {
        let t0 = Instant::now();
        while c.status().running {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "capture did not end"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn one_session_at_a_time_and_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = control(Some(dir.path().to_path_buf()));
        let mut events = c.events.subscribe();
        assert!(c.start(&req("night one")).unwrap().running);
        assert_eq!(
            c.start(&req("other")),
            Err(ControlError::Busy("night one".into()))
        );
        std::thread::sleep(Duration::from_millis(150));
        c.stop().unwrap();
        wait_idle(&c);
        let st = c.status();
        let n = st.last_captured.unwrap();
        assert!((1..1000).contains(&n), "{n} stills");
        assert_eq!(st.last_error, None);
        let files = std::fs::read_dir(dir.path().join("night one"))
            .unwrap()
            .count();
        assert_eq!(files, n as usize);
        assert_eq!(events.try_recv().unwrap().kind, EventKind::CaptureStarted);
        assert_eq!(events.try_recv().unwrap().kind, EventKind::CaptureStopped);
        assert_eq!(c.stop(), Err(ControlError::NotRunning));
    }

    #[test]
    fn bad_requests_are_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let c = control(Some(dir.path().to_path_buf()));
        for (r, want) in [
            (req("../up"), "cannot contain '/'"),
            (req(""), "cannot be empty"),
            (
                StartRequest {
                    count: Some(0),
                    ..req("s")
                },
                "count",
            ),
            (
                StartRequest {
                    interval_secs: Some(-1.0),
                    ..req("s")
                },
                "interval_secs",
            ),
        ] {
            match c.start(&r) {
                Err(ControlError::Invalid(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{r:?}: {other:?}"),
            }
        }
        assert!(!c.status().running);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(control(None).start(&req("s")), Err(ControlError::NoFolder));
    }

    #[test]
    fn a_camera_that_fails_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CaptureConfig {
            source: SourceKind::V4l2,
            device: dir.path().join("no-such-video"),
            ..CaptureConfig::default()
        };
        let c = CaptureControl::new(Some(dir.path().to_path_buf()), cfg, Events::new());
        c.start(&req("s")).unwrap();
        wait_idle(&c);
        let e = c.status().last_error.unwrap();
        assert!(e.contains("no-such-video"), "{e}");
    }
}
