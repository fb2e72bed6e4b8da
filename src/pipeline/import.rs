//! One still into the blockstore and the session store.

use super::events::{Event, EventKind};
use anyhow::{bail, Context, Result};
use cid::Cid;

use super::ingest::Ready;
use super::Shared;
use crate::block::Block;
use crate::blockstore::{self, BlockSink, PinMode};
use crate::session::{self, ImageRecord, ImageState, SessionRecord};
use crate::unixfs::file::import_file;

/// Passes blocks on and remembers their CIDs, to announce them to the node.
pub(super) struct Collect<'a, S> {
    pub(super) inner: &'a mut S,
    pub(super) cids: Vec<Cid>,
}

impl<S: BlockSink> BlockSink for Collect<'_, S> {
    fn put(&mut self, block: &Block) -> Result<(), blockstore::Error> {
        self.inner.put(block)?;
        self.cids.push(block.cid);
        Ok(())
    }
}

/// Imports `r` with the configured options (the CID `ipfs add` would give), pins it locally,
/// records it (queued for the cluster when one is configured) and announces its blocks.
/// Blocking: run it on the blocking pool.
pub(crate) fn import_image(shared: &Shared, session: &SessionRecord, r: &Ready) -> Result<()> {
    let file =
        std::fs::File::open(&r.path).with_context(|| format!("opening {}", r.path.display()))?;
    let mut writer = shared.blocks.writer();
    let mut sink = Collect {
        inner: &mut writer,
        cids: Vec::new(),
    };
    let node = import_file(
        &shared.import,
        std::io::BufReader::with_capacity(256 << 10, file),
        &mut sink,
        &mut |_| {},
    )
    .with_context(|| format!("importing {}", r.path.display()))?;
    let cids = sink.cids;
    writer
        .finish(&node.cid, PinMode::Recursive)
        .with_context(|| format!("storing {}", r.path.display()))?;

    // A writer that was still at it would have changed the size or time: the CID would name
    // half a still. Drop our pin (blocks another image shares stay) and let the next scan retry.
    let after = std::fs::symlink_metadata(&r.path)
        .with_context(|| format!("checking {} after import", r.path.display()))?;
    if after.len() != r.size
        || after.modified().ok() != Some(r.modified)
        || node.file_size != r.size
    {
        if shared
            .sessions
            .images_with_cid(&node.cid.to_string())?
            .is_empty()
        {
            let _ = shared.blocks.unpin(&node.cid);
        }
        bail!(
            "{} changed while it was imported; it will be imported again once it settles",
            r.path.display()
        );
    }

    let file_name = r
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let rec = ImageRecord {
        number: r.number,
        file: file_name,
        cid: node.cid.to_string(),
        size: node.file_size,
        dag_size: Some(node.tsize),
        captured_at: session::rfc3339(r.modified),
        state: ImageState::Imported,
        replicas: 0,
        local: true,
        error: None,
    };
    let enqueue = shared.cluster.is_some() && shared.per_image();
    let new = shared
        .sessions
        .record_import(&session.name, &rec, enqueue)
        .context("recording the import")?;
    if new {
        tracing::info!(session = %session.name, number = r.number, cid = %node.cid, bytes = node.file_size, "imported");
        shared.emit(Event::new(EventKind::Imported, &session.name).image(r.number, &rec.cid));
    }
    shared.node.notify_new_blocks(cids);
    shared.mark_dirty(&session.name);
    if enqueue {
        shared.outbox_grew.notify_one();
    } else if shared.cluster.is_some() {
        shared.note_for_round(&session.name);
    }
    Ok(())
}
