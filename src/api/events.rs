//! `GET /api/events`: the pipeline's events as server-sent events (`event: imported`, `data:
//! {json}`), for the web page and any script that wants to follow a night's progress live.
//!
//! A client that falls behind gets an `event: lagged` with the count it missed, and should
//! refresh from the JSON routes; a keep-alive comment every 15 s keeps proxies from closing an
//! idle stream. The stream ends when the daemon stops.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::ApiState;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn stream(
    State(st): State<ApiState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.events.subscribe();
    let stop = st.stop.clone();
    let s = futures::stream::unfold(Some((rx, stop)), |state| async move {
        let (mut rx, mut stop) = state?;
        let got = tokio::select! {
            r = rx.recv() => r,
            _ = stop.wait_for(|s| *s) => return None,
        };
        let ev = match got {
            Ok(e) => SseEvent::default()
                .event(e.kind.name())
                .json_data(&*e)
                .unwrap_or_else(|_| SseEvent::default().comment("unserializable event")),
            Err(RecvError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(ev), Some((rx, stop))))
    });
    // An opening comment flushes the headers at once, so a client knows it is subscribed.
    let hello =
        futures::stream::once(async { Ok(SseEvent::default().comment("wanda-ipfs events")) });
    Sse::new(futures::StreamExt::chain(hello, s)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
