//! Finding and loading the ONNX Runtime shared library.
//!
//! Tierline loads `libonnxruntime` at run time. It looks, in order, at:
//! 1. `ORT_DYLIB_PATH`, if set (it must then point at the library; nothing else is tried);
//! 2. the project-local copy `.ort/libonnxruntime.so.<ONNXRUNTIME_VERSION>` that `scripts/setup` places, found by
//!    walking up from the executable and from the source tree the binary was built from;
//! 3. an installed Python `onnxruntime` package (`<site-packages>/onnxruntime/capi/`).
//!
//! If none is found, the error says how to fix it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use thiserror::Error;

/// The ONNX Runtime release Tierline is built and tested against.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// Project-local directory holding the library.
pub const LOCAL_DIR: &str = ".ort";

/// Errors from locating or initializing ONNX Runtime.
#[derive(Debug, Error, Clone)]
pub enum OnnxError {
    /// `ORT_DYLIB_PATH` points at a file that does not exist.
    #[error(
        "ORT_DYLIB_PATH is set to {0}, which does not exist; unset it to use the project copy, or point it at libonnxruntime.so.{ONNXRUNTIME_VERSION}"
    )]
    EnvPathMissing(PathBuf),
    /// No library was found anywhere.
    #[error(
        "ONNX Runtime library not found (looked in ORT_DYLIB_PATH, {LOCAL_DIR}/ next to the project, and Python's onnxruntime package); run `scripts/setup` in the Tierline checkout, or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so.{ONNXRUNTIME_VERSION}"
    )]
    NotFound,
    /// The library was found but could not be loaded or initialized.
    #[error(
        "could not load ONNX Runtime from {path}: {message}; it must be ONNX Runtime {ONNXRUNTIME_VERSION} for this platform (run `scripts/setup`)"
    )]
    Load {
        /// Library path.
        path: PathBuf,
        /// Loader message.
        message: String,
    },
}

/// Locates the ONNX Runtime library using the search order in the module docs.
pub fn locate() -> Result<PathBuf, OnnxError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(OnnxError::EnvPathMissing(p))
        };
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(Path::to_path_buf),
    );
    for root in roots {
        let candidate = root
            .join(LOCAL_DIR)
            .join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    python_package_library().ok_or(OnnxError::NotFound)
}

/// Asks an installed Python for its `onnxruntime` package and returns the library inside it.
fn python_package_library() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let capi = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    libs.sort();
    libs.pop()
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, OnnxError>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<ort::environment::Environment, OnnxError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = locate()?;
            let load_err = |message: String| OnnxError::Load {
                path: path.clone(),
                message,
            };
            let env = ort::init_from(&path)
                .map_err(|e| load_err(e.to_string()))?
                .with_name("tierline")
                .with_telemetry(false)
                .build()
                .map_err(|e| load_err(e.to_string()))?;
            tracing::info!(path = %path.display(), "Loaded ONNX Runtime.");
            Ok(env)
        })
        .clone()
}
