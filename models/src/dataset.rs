//! Labeled image folders: `labels.csv` (a header with `file` and `label` columns, and optionally `surface`,
//! which `eval` reports by; other columns are ignored) or, without a CSV, one subfolder per label (`good/`, `scratch/`, ...) holding `.jpg`, `.jpeg` or `.png` files.

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors from reading a labeled folder.
#[derive(Debug, Error)]
pub enum DatasetError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The CSV header lacks a needed column.
    #[error("{path}: the header must name a `file` and a `label` column (found {header:?})")]
    Header {
        /// CSV path.
        path: PathBuf,
        /// The header line.
        header: String,
    },
    /// A CSV row is malformed.
    #[error("{path} line {line}: {problem}")]
    Row {
        /// CSV path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// Nothing to evaluate.
    #[error(
        "{path} holds no labeled images: give a labels.csv (file,label) or one subfolder per label with .jpg/.png files"
    )]
    Empty {
        /// Folder path.
        path: PathBuf,
    },
}

/// One labeled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Image path.
    pub path: PathBuf,
    /// Ground-truth label.
    pub label: String,
    /// The surface the frame shows, when the CSV has a `surface` column.
    pub surface: Option<String>,
}

/// Reads the labeled images of `dir`: from `labels` if given, else `dir/labels.csv` if it exists, else from
/// subfolder names. Files are returned in CSV order, or sorted by path for folders.
pub fn load(dir: &Path, labels: Option<&Path>) -> Result<Vec<Sample>, DatasetError> {
    let default_csv = dir.join("labels.csv");
    let samples = match labels {
        Some(csv) => from_csv(dir, csv)?,
        None if default_csv.is_file() => from_csv(dir, &default_csv)?,
        None => from_folders(dir)?,
    };
    if samples.is_empty() {
        return Err(DatasetError::Empty {
            path: dir.to_path_buf(),
        });
    }
    Ok(samples)
}

fn from_csv(dir: &Path, csv: &Path) -> Result<Vec<Sample>, DatasetError> {
    let text = std::fs::read_to_string(csv).map_err(|source| DatasetError::Read {
        path: csv.to_path_buf(),
        source,
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| columns.iter().position(|c| *c == name);
    let surface_col = col("surface");
    let (Some(file_col), Some(label_col)) = (col("file"), col("label")) else {
        return Err(DatasetError::Header {
            path: csv.to_path_buf(),
            header: header.to_string(),
        });
    };
    let mut out = Vec::new();
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let row_err = |problem: String| DatasetError::Row {
            path: csv.to_path_buf(),
            line: i + 1,
            problem,
        };
        let (Some(file), Some(label)) = (fields.get(file_col), fields.get(label_col)) else {
            return Err(row_err(format!(
                "expected {} columns, found {}",
                columns.len(),
                fields.len()
            )));
        };
        if file.is_empty() || label.is_empty() {
            return Err(row_err("empty file or label".into()));
        }
        let path = dir.join(file);
        if !path.is_file() {
            return Err(row_err(format!("image {} does not exist", path.display())));
        }
        out.push(Sample {
            path,
            label: (*label).to_string(),
            surface: surface_col
                .and_then(|c| fields.get(c))
                .filter(|s| !s.is_empty())
                .map(|s| (*s).to_string()),
        });
    }
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let err = |source| DatasetError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        paths.push(entry.map_err(err)?.path());
    }
    paths.sort();
    Ok(paths)
}

fn from_folders(dir: &Path) -> Result<Vec<Sample>, DatasetError> {
    let mut out = Vec::new();
    for sub in read_dir(dir)?.into_iter().filter(|p| p.is_dir()) {
        let Some(label) = sub.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        for path in read_dir(&sub)?.into_iter().filter(|p| is_image(p)) {
            out.push(Sample {
                path,
                label: label.clone(),
                surface: None,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("b.jpg"), b"x").unwrap();
        std::fs::write(
            dir.path().join("labels.csv"),
            "surface,label,file\ncast,good,a.jpg\nbrick,dent,b.jpg\n",
        )
        .unwrap();
        let s = load(dir.path(), None).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].label, "dent");
        assert_eq!(s[1].surface.as_deref(), Some("brick"));
        assert_eq!(s[1].path, dir.path().join("b.jpg"));
    }

    #[test]
    fn missing_image_names_the_line_and_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels.csv"), "file,label\nnope.jpg,good\n").unwrap();
        let msg = load(dir.path(), None).unwrap_err().to_string();
        assert!(msg.contains("line 2") && msg.contains("nope.jpg"), "{msg}");
    }

    #[test]
    fn header_without_label_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels.csv"), "file,class\na.jpg,good\n").unwrap();
        let msg = load(dir.path(), None).unwrap_err().to_string();
        assert!(msg.contains("`label`"), "{msg}");
    }

    #[test]
    fn folder_names_are_labels() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, file) in [
            ("good", "1.png"),
            ("stain", "2.JPG"),
            ("stain", "notes.txt"),
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join(file), b"x").unwrap();
        }
        let s = load(dir.path(), None).unwrap();
        let labels: Vec<&str> = s.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["good", "stain"]);
    }

    #[test]
    fn empty_folder_says_what_to_give() {
        let dir = tempfile::tempdir().unwrap();
        let msg = load(dir.path(), None).unwrap_err().to_string();
        assert!(msg.contains("labels.csv"), "{msg}");
    }
}
