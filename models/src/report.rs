//! Cascade metrics from scored frames.
//!
//! The cascade decides as the runtime does: the edge forwards a frame when its defect score is at or above
//! the edge threshold, and a forwarded frame gets the cloud model's label; every other frame passes as good.
//! Cloud-only sends every frame to the cloud model. Audit samples are left out (they add the audit rate to
//! the forwarded share and change no decision).
//!
//! With a target prevalence, every good frame is weighted `(1 - p) / good_share` and every defective frame
//! `p / defective_share`, so rates read as if defects made up `p` of the frames; per-class rates do not
//! change. Counts and confidence bounds always use the frames as they are.

use crate::cascade::Scored;
use serde::Serialize;

/// Two-sided 95 % normal quantile used for the Wilson bounds.
pub const Z95: f64 = tierline_shared::wilson::Z95;

/// Lower end of the Wilson score interval for `k` successes in `n` trials (`z` = normal quantile).
pub fn wilson_lower(k: usize, n: usize, z: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    tierline_shared::wilson::interval(k as u64, n as u64, z).0
}

/// A proportion with its raw counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rate {
    /// Frames that count as a hit.
    pub hits: usize,
    /// Frames in the denominator.
    pub total: usize,
    /// The rate, weighted by the target prevalence when one is given.
    pub rate: f64,
    /// Wilson 95 % lower bound on the unweighted rate.
    pub lower_95: f64,
}

/// Numbers for one ground-truth class.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassReport {
    /// Class name.
    pub label: String,
    /// Frames of this class.
    pub frames: usize,
    /// Share the edge forwarded.
    pub edge_forwarded: f64,
    /// Share the cloud model flagged as defective.
    pub cloud_flagged: f64,
    /// Share the cloud model labeled correctly.
    pub cloud_correct: f64,
    /// Share the cascade labeled correctly.
    pub cascade_correct: f64,
    /// Share the cascade passed (defect classes: escapes; `good`: correct passes).
    pub cascade_passed: f64,
}

/// Numbers for the frames of one surface (sets whose labels name surfaces).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SurfaceReport {
    /// Surface name.
    pub surface: String,
    /// Frames of this surface.
    pub frames: usize,
    /// Of them, defective (ground truth).
    pub defective_frames: usize,
    /// Share of frames forwarded (weighted like the totals).
    pub forwarded_frames: f64,
    /// Defective frames the cloud flags that the edge forwards.
    pub edge_recall_vs_cloud_on_defects: Rate,
    /// Good frames the cloud model flags.
    pub cloud_false_alarms: Rate,
    /// Defective frames that end as a pass.
    pub escapes: Rate,
    /// Good frames that end as a reject.
    pub false_rejects: Rate,
    /// Cascade minus cloud-only class accuracy, in points.
    pub accuracy_delta_points: f64,
    /// Per ground-truth class.
    pub classes: Vec<ClassReport>,
}

/// Everything `eval` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Frames scored.
    pub frames: usize,
    /// Frames whose truth is a defect.
    pub defective_frames: usize,
    /// Defect share of the frames as given.
    pub sample_prevalence: f64,
    /// Prevalence the rates are weighted to (`None`: as given).
    pub target_prevalence: Option<f64>,
    /// The good class (the one ground-truth label that is not a defect).
    pub good_label: String,
    /// Edge threshold used.
    pub edge_threshold: f32,
    /// Cloud threshold (from its manifest).
    pub cloud_threshold: f32,
    /// Defective frames the edge forwards.
    pub edge_recall_vs_truth: Rate,
    /// Frames the cloud model flags that the edge forwards.
    pub edge_recall_vs_cloud: Rate,
    /// Defective frames (ground truth) the cloud model flags that the edge forwards: the defects the
    /// cascade can catch at all.
    pub edge_recall_vs_cloud_on_defects: Rate,
    /// Escapes: defective frames (ground truth) that end as a pass in the cascade (the edge passed them,
    /// or the cloud judged them good). Against the ground truth the data set's labels give.
    pub escapes: Rate,
    /// False rejects: good frames (ground truth) that end as a reject (forwarded and flagged by the cloud).
    pub false_rejects: Rate,
    /// Good frames (ground truth) the cloud model flags: its false alarms, cloud-only.
    pub cloud_false_alarms: Rate,
    /// Cloud-only: frames whose label is right.
    pub cloud_accuracy: f64,
    /// Cloud-only: frames whose good/defective call is right.
    pub cloud_binary_accuracy: f64,
    /// Cascade: frames whose label is right.
    pub cascade_accuracy: f64,
    /// Cascade: frames whose good/defective call is right.
    pub cascade_binary_accuracy: f64,
    /// `cascade_accuracy - cloud_accuracy`, in percentage points.
    pub accuracy_delta_points: f64,
    /// Share of frames forwarded.
    pub forwarded_frames: f64,
    /// Share of image bytes forwarded.
    pub forwarded_bytes: f64,
    /// Per ground-truth class, in the cloud model's class order.
    pub classes: Vec<ClassReport>,
    /// Per surface, in name order (empty when the set names no surfaces).
    pub surfaces: Vec<SurfaceReport>,
}

/// Computes the report for `frames` at `edge_threshold`. `good` is the good class label, `classes` the cloud
/// model's classes (for the per-class order).
pub fn compute(
    frames: &[Scored],
    edge_threshold: f32,
    cloud_threshold: f32,
    good: &str,
    classes: &[String],
    target_prevalence: Option<f64>,
) -> Report {
    let n = frames.len();
    let defective = frames.iter().filter(|f| f.truth != good).count();
    let sample_prevalence = if n == 0 {
        0.0
    } else {
        defective as f64 / n as f64
    };
    let weight = |f: &Scored| -> f64 {
        match target_prevalence {
            Some(p) if defective > 0 && defective < n => {
                if f.truth == good {
                    (1.0 - p) / (1.0 - sample_prevalence)
                } else {
                    p / sample_prevalence
                }
            }
            _ => 1.0,
        }
    };
    let forwarded = |f: &Scored| f.edge_score >= edge_threshold;
    // The cascade rejects what the edge forwards and the cloud flags; everything else passes.
    let rejected = |f: &Scored| forwarded(f) && f.cloud.defective;
    // The cascade's label is the cloud's for forwarded frames and good for the rest.
    let cascade_right = |f: &Scored| {
        if forwarded(f) {
            f.cloud.label == f.truth
        } else {
            f.truth == good
        }
    };
    // Weighted share of `sel` frames for which `hit` holds, with raw counts.
    let rate = |sel: &dyn Fn(&Scored) -> bool, hit: &dyn Fn(&Scored) -> bool| -> Rate {
        let (mut hits, mut total, mut wh, mut wt) = (0, 0, 0.0, 0.0);
        for f in frames.iter().filter(|f| sel(f)) {
            let w = weight(f);
            total += 1;
            wt += w;
            if hit(f) {
                hits += 1;
                wh += w;
            }
        }
        Rate {
            hits,
            total,
            rate: if wt > 0.0 { wh / wt } else { 0.0 },
            lower_95: wilson_lower(hits, total, Z95),
        }
    };
    let all = |_: &Scored| true;
    let cloud_accuracy = rate(&all, &|f| f.cloud.label == f.truth).rate;
    let cascade_accuracy = rate(&all, &cascade_right).rate;
    let total_bytes: f64 = frames.iter().map(|f| weight(f) * f.bytes as f64).sum();
    let fwd_bytes: f64 = frames
        .iter()
        .filter(|f| forwarded(f))
        .map(|f| weight(f) * f.bytes as f64)
        .sum();
    let per_class = |label: &String| {
        let of = frames.iter().filter(|f| &f.truth == label);
        let k = of.clone().count();
        let share = |hit: &dyn Fn(&Scored) -> bool| {
            if k == 0 {
                0.0
            } else {
                of.clone().filter(|f| hit(f)).count() as f64 / k as f64
            }
        };
        ClassReport {
            label: label.clone(),
            frames: k,
            edge_forwarded: share(&|f| forwarded(f)),
            cloud_flagged: share(&|f| f.cloud.defective),
            cloud_correct: share(&|f| f.cloud.label == f.truth),
            cascade_correct: share(&cascade_right),
            cascade_passed: share(&|f| !rejected(f)),
        }
    };
    Report {
        frames: n,
        defective_frames: defective,
        sample_prevalence,
        target_prevalence,
        good_label: good.to_string(),
        edge_threshold,
        cloud_threshold,
        edge_recall_vs_truth: rate(&|f| f.truth != good, &forwarded),
        edge_recall_vs_cloud: rate(&|f| f.cloud.defective, &forwarded),
        edge_recall_vs_cloud_on_defects: rate(
            &|f| f.cloud.defective && f.truth != good,
            &forwarded,
        ),
        escapes: rate(&|f| f.truth != good, &|f| !rejected(f)),
        false_rejects: rate(&|f| f.truth == good, &rejected),
        cloud_false_alarms: rate(&|f| f.truth == good, &|f| f.cloud.defective),
        cloud_accuracy,
        cloud_binary_accuracy: rate(&all, &|f| f.cloud.defective == (f.truth != good)).rate,
        cascade_accuracy,
        cascade_binary_accuracy: rate(&all, &|f| {
            (forwarded(f) && f.cloud.defective) == (f.truth != good)
        })
        .rate,
        accuracy_delta_points: 100.0 * (cascade_accuracy - cloud_accuracy),
        forwarded_frames: rate(&all, &forwarded).rate,
        forwarded_bytes: if total_bytes > 0.0 {
            fwd_bytes / total_bytes
        } else {
            0.0
        },
        classes: classes
            .iter()
            .filter(|c| frames.iter().any(|f| &f.truth == *c))
            .map(per_class)
            .collect(),
        surfaces: Vec::new(),
    }
}

/// [`compute`], with a [`SurfaceReport`] for each surface the frames name (frames without a surface count in
/// the totals only). A surface's rates are weighted to the same prevalence as the totals when it has both
/// good and defective frames, and taken as they are otherwise.
pub fn compute_by_surface(
    frames: &[Scored],
    edge_threshold: f32,
    cloud_threshold: f32,
    good: &str,
    classes: &[String],
    target_prevalence: Option<f64>,
) -> Report {
    let mut report = compute(
        frames,
        edge_threshold,
        cloud_threshold,
        good,
        classes,
        target_prevalence,
    );
    let names: std::collections::BTreeSet<&str> =
        frames.iter().filter_map(|f| f.surface.as_deref()).collect();
    report.surfaces = names
        .into_iter()
        .map(|name| {
            let of: Vec<Scored> = frames
                .iter()
                .filter(|f| f.surface.as_deref() == Some(name))
                .cloned()
                .collect();
            let r = compute(
                &of,
                edge_threshold,
                cloud_threshold,
                good,
                classes,
                target_prevalence,
            );
            SurfaceReport {
                surface: name.to_string(),
                frames: r.frames,
                defective_frames: r.defective_frames,
                forwarded_frames: r.forwarded_frames,
                edge_recall_vs_cloud_on_defects: r.edge_recall_vs_cloud_on_defects,
                cloud_false_alarms: r.cloud_false_alarms,
                escapes: r.escapes,
                false_rejects: r.false_rejects,
                accuracy_delta_points: r.accuracy_delta_points,
                classes: r.classes,
            }
        })
        .collect();
    report
}

fn pct(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

fn rate_line(r: &Rate) -> String {
    let raw = r.hits as f64 / r.total.max(1) as f64;
    if (raw - r.rate).abs() < 5e-5 {
        format!(
            "{} ({}/{}, 95 % lower bound {})",
            pct(r.rate),
            r.hits,
            r.total,
            pct(r.lower_95)
        )
    } else {
        // Weighted: the count and its bound are for the sample as drawn, which can lie either side of it.
        format!(
            "{} weighted (sample: {}/{} = {}, 95 % lower bound {})",
            pct(r.rate),
            r.hits,
            r.total,
            pct(raw),
            pct(r.lower_95)
        )
    }
}

impl Report {
    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let prevalence = match self.target_prevalence {
            Some(p) => format!(
                "weighted to {} defect prevalence (sample: {})",
                pct(p),
                pct(self.sample_prevalence)
            ),
            None => format!(
                "{} defect prevalence as sampled",
                pct(self.sample_prevalence)
            ),
        };
        s += &format!(
            "{} frames ({} defective), {prevalence}\nedge threshold {:.6}, cloud threshold {:.6}\n\n",
            self.frames, self.defective_frames, self.edge_threshold, self.cloud_threshold
        );
        s += &format!(
            "edge recall vs cloud flags   {}\n",
            rate_line(&self.edge_recall_vs_cloud)
        );
        s += &format!(
            "edge recall vs ground truth  {}\n",
            rate_line(&self.edge_recall_vs_truth)
        );
        s += &format!(
            "edge recall vs cloud, defects {}\n",
            rate_line(&self.edge_recall_vs_cloud_on_defects)
        );
        s += &format!(
            "escapes (defects passed)     {} (against the labels' ground truth)\n",
            rate_line(&self.escapes)
        );
        s += &format!(
            "false rejects (goods)        {}\n",
            rate_line(&self.false_rejects)
        );
        s += &format!(
            "cloud false alarms (goods)   {}\n",
            rate_line(&self.cloud_false_alarms)
        );
        s += &format!(
            "forwarded                    {} of frames, {} of bytes (saved {})\n",
            pct(self.forwarded_frames),
            pct(self.forwarded_bytes),
            pct(1.0 - self.forwarded_bytes)
        );
        s += &format!(
            "accuracy (class)             cloud-only {}, cascade {} ({:+.2} points)\n",
            pct(self.cloud_accuracy),
            pct(self.cascade_accuracy),
            self.accuracy_delta_points
        );
        s += &format!(
            "accuracy (good/defective)    cloud-only {}, cascade {}\n\n",
            pct(self.cloud_binary_accuracy),
            pct(self.cascade_binary_accuracy)
        );
        s += &format!(
            "{:<10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "class", "frames", "edge fwd", "cloud flag", "cloud ok", "cascade ok", "passed"
        );
        for c in &self.classes {
            s += &format!(
                "{:<10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
                c.label,
                c.frames,
                pct(c.edge_forwarded),
                pct(c.cloud_flagged),
                pct(c.cloud_correct),
                pct(c.cascade_correct),
                pct(c.cascade_passed)
            );
        }
        if !self.surfaces.is_empty() {
            s += &format!(
                "\n{:<10} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}  cloud recall per defect class\n",
                "surface",
                "frames",
                "defective",
                "forwarded",
                "edge/cloud",
                "escapes",
                "false rej",
                "cloud FA"
            );
            for r in &self.surfaces {
                let recall: Vec<String> = r
                    .classes
                    .iter()
                    .filter(|c| c.label != self.good_label)
                    .map(|c| format!("{} {}", c.label, pct(c.cloud_flagged)))
                    .collect();
                s += &format!(
                    "{:<10} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}  {}\n",
                    r.surface,
                    r.frames,
                    r.defective_frames,
                    pct(r.forwarded_frames),
                    pct(r.edge_recall_vs_cloud_on_defects.rate),
                    pct(r.escapes.rate),
                    pct(r.false_rejects.rate),
                    pct(r.cloud_false_alarms.rate),
                    recall.join(", ")
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierline_shared::runner::Score;

    fn frame(truth: &str, edge: f32, cloud: &str, bytes: u64) -> Scored {
        Scored {
            path: "x".into(),
            truth: truth.into(),
            surface: None,
            bytes,
            edge_score: edge,
            cloud: Score {
                defect_score: if cloud == "good" { 0.1 } else { 0.9 },
                defective: cloud != "good",
                label: cloud.into(),
                class_scores: Vec::new(),
                regions: Vec::new(),
            },
        }
    }

    fn classes() -> Vec<String> {
        ["good", "spot", "dent"].map(String::from).to_vec()
    }

    #[test]
    fn cascade_follows_the_edge_threshold() {
        let frames = vec![
            frame("good", 0.1, "good", 100),
            frame("good", 0.6, "spot", 100), // cloud false positive, forwarded
            frame("spot", 0.9, "spot", 300),
            frame("dent", 0.3, "dent", 500), // edge miss of a cloud flag
        ];
        let r = compute(&frames, 0.5, 0.5, "good", &classes(), None);
        assert_eq!(
            (r.edge_recall_vs_cloud.hits, r.edge_recall_vs_cloud.total),
            (2, 3)
        );
        assert_eq!(
            (r.edge_recall_vs_truth.hits, r.edge_recall_vs_truth.total),
            (1, 2)
        );
        assert!((r.forwarded_frames - 0.5).abs() < 1e-12);
        assert!((r.forwarded_bytes - 400.0 / 1000.0).abs() < 1e-12);
        assert!((r.cloud_accuracy - 0.75).abs() < 1e-12);
        // The cascade loses the dent and the cloud's false positive stays.
        assert!((r.cascade_accuracy - 0.5).abs() < 1e-12);
        assert!((r.accuracy_delta_points + 25.0).abs() < 1e-9);
        let dent = r.classes.iter().find(|c| c.label == "dent").unwrap();
        assert_eq!((dent.cloud_correct, dent.cascade_correct), (1.0, 0.0));
        // Against ground truth: the dent escapes, the good frame the cloud flags is a false reject; of the
        // two defects the cloud catches, the edge forwards one.
        assert_eq!(dent.cascade_passed, 1.0);
        assert_eq!((r.escapes.hits, r.escapes.total), (1, 2));
        assert_eq!((r.false_rejects.hits, r.false_rejects.total), (1, 2));
        assert_eq!(
            (
                r.edge_recall_vs_cloud_on_defects.hits,
                r.edge_recall_vs_cloud_on_defects.total
            ),
            (1, 2)
        );
    }

    #[test]
    fn prevalence_weighting_reweights_aggregates_only() {
        let frames = vec![
            frame("good", 0.6, "good", 100),
            frame("good", 0.1, "good", 100),
            frame("spot", 0.9, "spot", 100),
            frame("spot", 0.9, "spot", 100),
        ];
        let r = compute(&frames, 0.5, 0.5, "good", &classes(), Some(0.02));
        // Forwarded: half of the goods (weight 0.98) and all defects (weight 0.02).
        assert!((r.forwarded_frames - (0.98 * 0.5 + 0.02)).abs() < 1e-12);
        let good = r.classes.iter().find(|c| c.label == "good").unwrap();
        assert!((good.edge_forwarded - 0.5).abs() < 1e-12);
    }

    #[test]
    fn surfaces_are_reported_apart() {
        let on = |surface: &str, mut f: Scored| {
            f.surface = Some(surface.into());
            f
        };
        let frames = vec![
            on("cast", frame("spot", 0.9, "spot", 100)),
            on("cast", frame("good", 0.1, "good", 100)),
            on("woven", frame("spot", 0.2, "spot", 100)), // the edge misses it: an escape
            on("woven", frame("good", 0.8, "dent", 100)), // forwarded, flagged: a false reject
            frame("dent", 0.9, "dent", 100),              // no surface named
        ];
        let r = compute_by_surface(&frames, 0.5, 0.5, "good", &classes(), None);
        assert_eq!(r.frames, 5);
        let names: Vec<&str> = r.surfaces.iter().map(|s| s.surface.as_str()).collect();
        assert_eq!(names, ["cast", "woven"]);
        let (cast, woven) = (&r.surfaces[0], &r.surfaces[1]);
        assert_eq!((cast.escapes.hits, cast.escapes.total), (0, 1));
        assert_eq!((woven.escapes.hits, woven.escapes.total), (1, 1));
        assert_eq!(
            (woven.false_rejects.hits, woven.false_rejects.total),
            (1, 1)
        );
        assert_eq!(
            (
                woven.cloud_false_alarms.hits,
                woven.cloud_false_alarms.total
            ),
            (1, 1)
        );
        assert_eq!((r.escapes.hits, r.escapes.total), (1, 3));
        assert!(r.table().contains("woven"));
    }

    #[test]
    fn wilson_bound_matches_known_values() {
        // 995/1000 at 95 %: 0.98838 (two-sided Wilson, lower end).
        assert!((wilson_lower(995, 1000, Z95) - 0.988_38).abs() < 1e-4);
        assert!(wilson_lower(10, 10, Z95) < 1.0);
        assert_eq!(wilson_lower(0, 0, Z95), 0.0);
    }
}
