//! What the numbers were taken on: CPU, cores, memory, kernel, ONNX Runtime, commit and date, and the
//! FP32 peak of one core estimated from the CPU flags and clock.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The machine and build a run was taken on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// Total memory in MiB (`/proc/meminfo`).
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// ONNX Runtime version the build targets, and the library loaded.
    pub onnxruntime: String,
    /// Git commit of the checkout (with `-dirty` if it has uncommitted changes).
    pub git_commit: String,
    /// When the run finished (UTC, RFC 3339).
    pub date: String,
    /// SIMD level the peak estimate assumes.
    pub simd: String,
    /// FP32 FLOPs per cycle per core for that SIMD level.
    pub flops_per_cycle: f64,
    /// Clock used for the peak, GHz.
    pub clock_ghz: f64,
    /// Where the clock figure comes from.
    pub clock_source: String,
    /// Estimated FP32 peak of one core, GFLOP/s.
    pub core_peak_gflops: f64,
    /// FP32 peak of one core measured in the run ([`crate::peak`]), GFLOP/s (0 when not measured).
    #[serde(default)]
    pub measured_peak_gflops: f64,
    /// The instructions the measured peak used.
    #[serde(default)]
    pub measured_peak_kernel: String,
    /// 1-minute load average when the description was taken (other work on the machine skews results).
    pub load_average: f64,
    /// Cargo profile of the harness binary (`release` or `debug`).
    pub build_profile: String,
}

fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// FP32 FLOPs per cycle of one core, from its flags: two FMA units of the widest vector width, the
/// common layout of server cores since Haswell (AVX-512: 64, AVX2 + FMA: 32, AVX: 16, SSE: 8).
pub fn flops_per_cycle(flags: &str) -> (&'static str, f64) {
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("avx512f") {
        ("AVX-512 + FMA", 64.0)
    } else if has("avx2") && has("fma") {
        ("AVX2 + FMA", 32.0)
    } else if has("avx") {
        ("AVX", 16.0)
    } else {
        ("SSE", 8.0)
    }
}

/// The nominal clock in a model name such as `Intel(R) Xeon(R) CPU @ 2.20GHz`.
fn nominal_ghz(model: &str) -> Option<f64> {
    let at = model.rfind('@')?;
    model[at + 1..]
        .trim()
        .strip_suffix("GHz")?
        .trim()
        .parse()
        .ok()
}

fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Reads the machine description. `repo` is the checkout whose commit is recorded.
pub fn describe(repo: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into());
    let flags = cpuinfo_field(&cpuinfo, "flags").unwrap_or_default();
    let (simd, per_cycle) = flops_per_cycle(&flags);
    let mhz = cpuinfo_field(&cpuinfo, "cpu MHz").and_then(|v| v.parse::<f64>().ok());
    let (clock_ghz, clock_source) = match (nominal_ghz(&cpu_model), mhz) {
        (Some(g), _) => (g, "nominal clock in the CPU model name".to_string()),
        (None, Some(m)) => (m / 1000.0, "`cpu MHz` in /proc/cpuinfo".to_string()),
        (None, None) => (0.0, "unknown".to_string()),
    };
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let library = tierline_shared::onnx::locate()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| e.to_string());
    let commit =
        git(repo, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(repo, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib,
        kernel,
        onnxruntime: format!("{} ({library})", tierline_shared::onnx::ONNXRUNTIME_VERSION),
        git_commit: if dirty {
            format!("{commit}-dirty")
        } else {
            commit
        },
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        simd: simd.into(),
        flops_per_cycle: per_cycle,
        clock_ghz,
        clock_source,
        core_peak_gflops: per_cycle * clock_ghz,
        measured_peak_gflops: 0.0,
        measured_peak_kernel: String::new(),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0),
        build_profile: if cfg!(debug_assertions) {
            "debug".into()
        } else {
            "release".into()
        },
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`), 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_follows_the_widest_simd() {
        assert_eq!(flops_per_cycle("fpu sse2 avx avx2 fma").1, 32.0);
        assert_eq!(flops_per_cycle("fpu sse2 avx avx2 fma avx512f").1, 64.0);
        assert_eq!(flops_per_cycle("fpu sse2 avx").1, 16.0);
        assert_eq!(flops_per_cycle("fpu sse2").1, 8.0);
    }

    #[test]
    fn nominal_clock_is_read_from_the_model_name() {
        assert_eq!(nominal_ghz("Intel(R) Xeon(R) CPU @ 2.20GHz"), Some(2.2));
        assert_eq!(nominal_ghz("AMD EPYC 7B13"), None);
    }
}
