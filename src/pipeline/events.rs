//! What the pipeline tells live views (the API's server-sent events, the web page): one event
//! per step a still takes, after the step is durable in the session store.
//!
//! A broadcast channel with a fixed capacity: a subscriber that falls behind loses the oldest
//! events and is told so ([`tokio::sync::broadcast::error::RecvError::Lagged`]), so a slow
//! browser never holds memory or the pipeline back. Events are hints to refresh; the store
//! stays the truth.
//!
//! Slots hold `Arc<Event>`: tokio's broadcast channel builds every slot when it is created, so
//! 1024 inline events (~144 bytes each) were 147 KiB written at start and resident for the
//! daemon's life, whether or not anyone ever subscribed. With a pointer a slot is about a quarter
//! of that, and subscribers share one copy of each event.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for subscribers that are behind.
const CAPACITY: usize = 1024;

/// The step an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A still was imported and recorded (pinned locally).
    Imported,
    /// The cluster accepted the pin (of a still, or of a session directory).
    Pinning,
    /// The count of cluster peers holding it changed, still short of `replication_min`.
    Replicas,
    /// Enough cluster peers hold it.
    Pinned,
    /// The local file and blocks were deleted.
    Freed,
    /// The cluster refused it; it stays local.
    Failed,
    /// A capture started by the API began or ended.
    CaptureStarted,
    CaptureStopped,
}

impl EventKind {
    /// The SSE `event:` name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Imported => "imported",
            EventKind::Pinning => "pinning",
            EventKind::Replicas => "replicas",
            EventKind::Pinned => "pinned",
            EventKind::Freed => "freed",
            EventKind::Failed => "failed",
            EventKind::CaptureStarted => "capture_started",
            EventKind::CaptureStopped => "capture_stopped",
        }
    }
}

/// One pipeline event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub session: String,
    /// The still's number; absent for session-wide events (a session directory, a capture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 UTC.
    pub at: String,
}

impl Event {
    pub fn new(kind: EventKind, session: &str) -> Event {
        Event {
            kind,
            session: session.to_string(),
            number: None,
            cid: None,
            replicas: None,
            error: None,
            at: crate::session::now_rfc3339(),
        }
    }

    pub fn image(mut self, number: u32, cid: &str) -> Event {
        self.number = Some(number);
        self.cid = Some(cid.to_string());
        self
    }

    pub fn number(mut self, number: u32) -> Event {
        self.number = Some(number);
        self
    }

    pub fn cid(mut self, cid: &str) -> Event {
        self.cid = Some(cid.to_string());
        self
    }

    pub fn replicas(mut self, n: u32) -> Event {
        self.replicas = Some(n);
        self
    }

    pub fn error(mut self, e: &str) -> Event {
        self.error = Some(e.to_string());
        self
    }
}

/// The sending side, shared by the pipeline's tasks and the API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// Sends to every current subscriber; with none, the event is dropped.
    pub fn emit(&self, e: Event) {
        let _ = self.tx.send(Arc::new(e));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_and_catches_up() {
        let ev = Events::new();
        let mut rx = ev.subscribe();
        for n in 0..(CAPACITY as u32 + 10) {
            ev.emit(Event::new(EventKind::Imported, "s").image(n, "Qm"));
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(k)) => assert_eq!(k, 10),
            other => panic!("expected Lagged, got {other:?}"),
        }
        assert_eq!(rx.recv().await.unwrap().number, Some(10));
    }

    #[test]
    fn serializes_without_empty_fields() {
        let mut e = Event::new(EventKind::Pinned, "night 1")
            .image(3, "QmX")
            .replicas(2);
        e.at = "2026-01-01T00:00:00Z".into();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"kind":"pinned","session":"night 1","number":3,"cid":"QmX","replicas":2,"at":"2026-01-01T00:00:00Z"}"#
        );
        assert_eq!(EventKind::CaptureStarted.name(), "capture_started");
    }
}
