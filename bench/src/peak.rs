//! The FP32 peak of one core, measured: independent fused multiply-adds on the widest vectors the CPU runs
//! (AVX-512, else AVX2 + FMA), on the calling thread. The nominal clock and the flags only estimate it; a
//! boosting clock or a shared physical core makes the true figure differ, so the report uses this one.

use std::time::Instant;

/// Independent accumulators: enough to cover the FMA latency (4 cycles) on two ports.
const CHAINS: usize = 12;

/// Measured FP32 GFLOP/s of the calling thread and the instructions used, or `None` without FMA.
pub fn measure(seconds: f64) -> Option<(f64, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU runs AVX-512F (checked above).
            #[allow(unsafe_code)]
            return Some((run(seconds, 16, |n| unsafe { avx512(n) }), "AVX-512 FMA"));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU runs AVX2 and FMA (checked above).
            #[allow(unsafe_code)]
            return Some((run(seconds, 8, |n| unsafe { avx2(n) }), "AVX2 FMA"));
        }
    }
    let _ = seconds;
    None
}

/// Runs `kernel` in growing rounds for about `seconds`; returns the best round's GFLOP/s.
fn run(seconds: f64, lanes: usize, kernel: impl Fn(u64) -> f32) -> f64 {
    let mut iterations = 1u64 << 16;
    let mut best = 0f64;
    let until = Instant::now() + std::time::Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let started = Instant::now();
        std::hint::black_box(kernel(iterations));
        let took = started.elapsed().as_secs_f64();
        let flops = iterations as f64 * (CHAINS * lanes * 2) as f64;
        best = best.max(flops / took / 1e9);
        if took < 0.05 {
            iterations *= 2;
        }
    }
    best
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn avx512(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for x in acc {
        sum = _mm512_add_ps(sum, x);
    }
    _mm512_reduce_add_ps(sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for x in acc {
        sum = _mm256_add_ps(sum, x);
    }
    // Every lane holds the same value.
    _mm256_cvtss_f32(sum)
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_a_positive_rate_where_fma_exists() {
        if let Some((gflops, what)) = super::measure(0.05) {
            assert!(gflops > 0.1, "{what}: {gflops} GFLOP/s");
        }
    }
}
