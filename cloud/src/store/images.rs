//! Where stored images live: in the frames table (`database`), or as objects through the `object_store`
//! crate: a local directory (`file:///…`, the default next to a SQLite store) or S3-compatible storage
//! (`s3://bucket/prefix`, credentials and endpoint from the usual `AWS_*` environment variables), which
//! several workers on several hosts share. A frame row keeps the object's key (`frames.image_ref`); the
//! object is written before the row is committed, and retention deletes it after the row stopped naming it,
//! so a row never names an object that was never written (a crash in between leaves at most an unnamed
//! object, overwritten when the frame is delivered again).

use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::sync::Arc;
use thiserror::Error;
use tierline_shared::wire::FrameEnvelope;

/// A failure of the image storage.
#[derive(Debug, Error)]
pub enum ImagesError {
    /// The setting names no usable storage.
    #[error(
        "store.images {spec:?} is not usable: {problem}; use \"database\", file:///absolute/dir or s3://bucket/prefix"
    )]
    Spec {
        /// The setting.
        spec: String,
        /// What is wrong.
        problem: String,
    },
    /// Reading or writing an object failed.
    #[error("image storage {url} failed to {op} {key}: {source}")]
    Object {
        /// Where.
        url: String,
        /// What was being done.
        op: &'static str,
        /// The object key.
        key: String,
        /// Cause.
        source: Box<object_store::Error>,
    },
}

/// Where stored images live.
#[derive(Clone)]
pub enum Images {
    /// In the frames table.
    Database,
    /// Objects under `prefix` of `store`.
    Objects {
        /// The object store.
        store: Arc<dyn ObjectStore>,
        /// Key prefix.
        prefix: ObjectPath,
        /// The setting, for messages.
        url: String,
    },
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Images {
    /// From a setting: `database`, `file:///dir` (created if missing) or `s3://bucket/prefix`.
    pub fn open(spec: &str) -> Result<Self, ImagesError> {
        Self::open_with(spec, &[])
    }

    /// [`Images::open`], with S3 options (`aws_endpoint`, `aws_region`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_allow_http`, … as `object_store` names them) over those of the
    /// environment.
    pub fn open_with(spec: &str, options: &[(String, String)]) -> Result<Self, ImagesError> {
        let bad = |problem: String| ImagesError::Spec {
            spec: spec.into(),
            problem,
        };
        if spec == "database" {
            return Ok(Self::Database);
        }
        let url = url::Url::parse(spec).map_err(|e| bad(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| bad("a file URL needs an absolute path".into()))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(e.to_string()))?;
                (Arc::new(local), ObjectPath::default())
            }
            "s3" => {
                let bucket = url.host_str().unwrap_or_default();
                if bucket.is_empty() {
                    return Err(bad("an s3 URL names a bucket: s3://bucket/prefix".into()));
                }
                let mut builder = object_store::aws::AmazonS3Builder::from_env();
                for (key, value) in options {
                    let key = key
                        .parse::<object_store::aws::AmazonS3ConfigKey>()
                        .map_err(|e| bad(format!("option {key:?}: {e}")))?;
                    builder = builder.with_config(key, value);
                }
                let s3 = builder
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                let prefix = ObjectPath::from(url.path().trim_matches('/'));
                (Arc::new(s3), prefix)
            }
            other => return Err(bad(format!("scheme {other:?} is not supported"))),
        };
        Ok(Self::Objects {
            store,
            prefix,
            url: spec.into(),
        })
    }

    /// The default next to a store at `db_url`: a directory `tierline-images` beside a SQLite file; the
    /// database itself for PostgreSQL (workers on several hosts share it; set `store.images` to an S3 bucket
    /// to move images out).
    pub fn default_for(db_url: &str) -> String {
        let Some(path) = db_url.strip_prefix("sqlite://") else {
            return "database".into();
        };
        let path = path.split('?').next().unwrap_or(path);
        let file = std::path::Path::new(path);
        let dir = file.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::path::PathBuf::from("."),
        };
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        url::Url::from_directory_path(dir.join("tierline-images"))
            .map(String::from)
            .unwrap_or_else(|()| "database".into())
    }

    /// Whether images go to objects.
    pub fn external(&self) -> bool {
        matches!(self, Self::Objects { .. })
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Database => "the database".into(),
            Self::Objects { url, .. } => url.clone(),
        }
    }

    /// The key of a frame's image: unique per frame and image (`<edge>/<incarnation>/<seq>-<sha256 prefix>`).
    pub fn key(frame: &FrameEnvelope) -> String {
        let incarnation = if frame.incarnation.is_empty() {
            "_"
        } else {
            frame.incarnation.as_str()
        };
        let sha = hex::encode(&frame.image_sha256);
        let sha = sha.get(..16).unwrap_or(&sha);
        format!("{}/{incarnation}/{}-{sha}", frame.edge_id, frame.seq)
    }

    fn path(prefix: &ObjectPath, key: &str) -> ObjectPath {
        key.split('/').fold(prefix.clone(), |p, part| p.child(part))
    }

    /// Writes an image under `key`.
    pub async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), ImagesError> {
        let Self::Objects { store, prefix, url } = self else {
            return Ok(());
        };
        store
            .put(&Self::path(prefix, key), bytes.to_vec().into())
            .await
            .map(|_| ())
            .map_err(|source| ImagesError::Object {
                url: url.clone(),
                op: "write",
                key: key.into(),
                source: Box::new(source),
            })
    }

    /// The image under `key`; `None` when it is not there (removed by retention, or never written).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ImagesError> {
        let Self::Objects { store, prefix, url } = self else {
            return Ok(None);
        };
        let err = |source| ImagesError::Object {
            url: url.clone(),
            op: "read",
            key: key.into(),
            source: Box::new(source),
        };
        match store.get(&Self::path(prefix, key)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(err)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Deletes the images under `keys`; one that is already gone is not an error.
    pub async fn delete(&self, keys: &[String]) -> Result<(), ImagesError> {
        let Self::Objects { store, prefix, url } = self else {
            return Ok(());
        };
        for key in keys {
            match store.delete(&Self::path(prefix, key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(ImagesError::Object {
                        url: url.clone(),
                        op: "delete",
                        key: key.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_store_keeps_its_images_beside_it_and_postgres_in_the_database() {
        let d = Images::default_for("sqlite:///var/lib/tierline/cloud.db");
        assert_eq!(d, "file:///var/lib/tierline/tierline-images/");
        assert_eq!(Images::default_for("postgres://u@h/db"), "database");
        assert!(Images::default_for("sqlite://cloud.db").ends_with("/tierline-images/"));
    }

    #[test]
    fn bad_settings_are_named() {
        for spec in ["ftp://x/y", "s3:///nobucket", "not a url"] {
            let e = Images::open(spec).unwrap_err().to_string();
            assert!(e.contains(spec) && e.contains("s3://bucket/prefix"), "{e}");
        }
    }

    #[test]
    fn keys_are_unique_per_frame_and_image() {
        let mut f = FrameEnvelope {
            edge_id: "e1".into(),
            seq: 7,
            incarnation: "abc".into(),
            image_sha256: vec![0xab; 32],
            ..FrameEnvelope::default()
        };
        assert_eq!(Images::key(&f), "e1/abc/7-abababababababab");
        f.image_sha256 = vec![0xcd; 32];
        assert_eq!(Images::key(&f), "e1/abc/7-cdcdcdcdcdcdcdcd");
    }
}
