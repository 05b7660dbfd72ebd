//! The labels export: the reviewed frames under the reviewer's filter as a tar archive of one folder,
//! `tierline-labels/`, holding each frame's image and a `labels.csv` ([`tierline_shared::labels`]), which
//! `tierline-models eval` and `calibrate` read once unpacked. Streamed: the archive is written as the
//! frames are read, one page at a time, never held whole in memory.

use super::{SharedState, session, unavailable};
use crate::store::{FrameFilter, FrameRow, Store, StoreError};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tierline_shared::labels::{self, Labelled};
use tokio::sync::mpsc;

/// Most frames in one export; narrow the filter for more.
pub const MAX_FRAMES: usize = 50_000;

/// Frames read from the store per page.
const PAGE: u32 = 200;

/// The folder inside the archive.
const FOLDER: &str = "tierline-labels";

/// The reviewed frames under a filter, a page at a time, newest first, up to [`MAX_FRAMES`].
struct Reviewed {
    filter: FrameFilter,
    seen: usize,
    done: bool,
}

impl Reviewed {
    fn new(filter: &FrameFilter) -> Self {
        Self {
            filter: FrameFilter {
                reviewed: true,
                unreviewed: false,
                disagreement: false,
                limit: PAGE,
                after: None,
                ..filter.clone()
            },
            seen: 0,
            done: false,
        }
    }

    /// The next page (`None` after the last).
    async fn next(&mut self, store: &Store) -> Result<Option<Vec<FrameRow>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let mut rows = store.list_frames(&self.filter).await?;
        rows.truncate(MAX_FRAMES - self.seen);
        let Some(last) = rows.last() else {
            self.done = true;
            return Ok(None);
        };
        self.filter.after = Some((last.capture_time_us, last.edge_id.clone(), last.seq as u64));
        self.seen += rows.len();
        self.done = rows.len() < PAGE as usize || self.seen >= MAX_FRAMES;
        Ok(Some(rows))
    }
}

/// How many reviewed frames the filter selects (up to [`MAX_FRAMES`]).
pub async fn count(store: &Store, filter: &FrameFilter) -> Result<usize, StoreError> {
    let mut pages = Reviewed::new(filter);
    let mut n = 0;
    while let Some(rows) = pages.next(store).await? {
        n += rows.len();
    }
    Ok(n)
}

/// `GET /export.tar`.
pub async fn archive(axum::extract::State(shared): SharedState, headers: HeaderMap) -> Response {
    let s = match session(&shared, &headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    // Fail before the first byte when the store is down, with a page that says so.
    if let Err(e) = shared.store.ping().await {
        return unavailable(e);
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let store = shared.store.clone();
    let filter = s.filter.clone();
    tracing::info!(reviewer = %s.reviewer, "Labels export started in the console.");
    tokio::spawn(async move {
        if let Err(e) = write_archive(&store, &filter, &tx).await {
            tracing::warn!(error = %e, "Labels export stopped; the archive is incomplete.");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-tar"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"tierline-labels.tar\""),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("the download was cancelled")]
    Gone,
}

async fn write_archive(
    store: &Store,
    filter: &FrameFilter,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ExportError> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut csv = format!("{}\n", labels::HEADER);
    let mut frames = 0usize;
    let mut pages = Reviewed::new(filter);
    while let Some(rows) = pages.next(store).await? {
        for row in rows {
            let (image, reviews) = match store.get_frame(&row.edge_id, row.seq as u64).await? {
                Some((_, Some(image), reviews)) => (image, reviews),
                // Pruned by retention meanwhile: nothing to train on.
                _ => continue,
            };
            let reviewer = reviews.last().map(|r| r.reviewer.as_str()).unwrap_or("");
            let entry = Labelled {
                edge_id: &row.edge_id,
                incarnation: &row.incarnation,
                seq: row.seq as u64,
                camera_id: &row.camera_id,
                label: &row.review_label,
                cloud_label: &row.label,
                reviewer,
                png: row.image_encoding == tierline_shared::wire::ImageEncoding::Png as i32,
            };
            append(&mut tar, &format!("{FOLDER}/{}", entry.file_name()), &image)?;
            csv.push_str(&entry.csv_line());
            csv.push('\n');
            frames += 1;
            let chunk = std::mem::take(tar.get_mut());
            tx.send(Ok(Bytes::from(chunk)))
                .await
                .map_err(|_| ExportError::Gone)?;
        }
    }
    append(&mut tar, &format!("{FOLDER}/labels.csv"), csv.as_bytes())?;
    let rest = tar.into_inner()?;
    tx.send(Ok(Bytes::from(rest)))
        .await
        .map_err(|_| ExportError::Gone)?;
    tracing::info!(frames, "Labels export finished.");
    Ok(())
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)
}
