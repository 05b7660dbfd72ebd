//! The shipped deployment files stay valid: the example configs load with the real (strict) loaders,
//! Mosquitto starts with the shipped broker config and ACL, and the alert rules and the autoscaler use only
//! metrics the binaries export. (`scripts/check-deploy` validates the Kubernetes manifests, the rules file
//! and the systemd units with external validators.)

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn example_configs_load_strictly() {
    let edge = tierline_edge::EdgeConfig::load(Some(&deploy("edge.example.toml"))).unwrap();
    assert!(!edge.cameras.is_empty());
    let cloud = tierline_cloud::CloudConfig::load(Some(&deploy("cloud.example.toml"))).unwrap();
    assert!(cloud.store.url.starts_with("sqlite:"));
}

#[test]
fn mosquitto_starts_with_the_shipped_config_and_acl() {
    let dir = tempfile::tempdir().unwrap();
    let b = tierline_tests::shipped::start(dir.path(), &[("edge-a", "pw")]);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", b.tls_port)).is_ok(),
        "TLS listener: {}",
        b.broker.log()
    );
}

/// Every `tierline_*` name an alert rule or the autoscaler uses is a metric the binaries export.
#[test]
fn deployment_files_use_only_exported_metrics() {
    let exported: Vec<String> = tierline_shared::metrics::ALL
        .iter()
        .map(|m| m.exported_name())
        .collect();
    for file in ["prometheus/alerts.yml", "k8s/cloud.yaml"] {
        let text = std::fs::read_to_string(deploy(file)).unwrap();
        let mut used = 0;
        for (i, _) in text.match_indices("tierline_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Labels and resource names like tierline-cloud use dashes; only metric names get here.
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which no binary exports (see shared/src/metrics.rs)"
            );
            used += 1;
        }
        assert!(used > 0, "{file} names no metric");
    }
}

/// The Grafana dashboard is a dashboard Grafana can import, and every query in it names only exported
/// metrics (a histogram through its `_bucket`, `_sum` or `_count` series).
#[test]
fn the_grafana_dashboard_uses_only_exported_metrics() {
    use tierline_shared::metrics::{ALL, Kind};
    let text = std::fs::read_to_string(deploy("grafana/tierline.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "tierline-overview");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert!(!title.is_empty());
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries nothing");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let mut names = 0;
            for (i, _) in expr.match_indices("tierline_") {
                if i > 0 && expr.as_bytes()[i - 1].is_ascii_alphanumeric() {
                    continue;
                }
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let known = ALL.iter().any(|m| {
                    let exported = m.exported_name();
                    name == exported
                        || (m.kind == Kind::Histogram
                            && ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|s| name == format!("{exported}{s}")))
                });
                assert!(
                    known,
                    "panel {title:?} uses {name}, which no binary exports (see shared/src/metrics.rs)"
                );
                names += 1;
            }
            assert!(names > 0, "panel {title:?}: {expr} names no metric");
            queries += 1;
        }
    }
    assert!(queries >= 15, "only {queries} queries");
}

/// One rule per failure class the README lists, at least: rules are there and name their severity.
#[test]
fn alert_rules_cover_the_failure_classes() {
    let text = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    for metric in [
        "tierline_ready",
        "tierline_model_session_rebuilds_total",
        "tierline_model_reload_failures_total",
        "tierline_model_probe_wrong_answers_total",
        "tierline_edge_link_up",
        "tierline_edge_outbox_evictions_total",
        "tierline_edge_outbox_errors_total",
        "tierline_cloud_rejected_forged_total",
        "tierline_cloud_oldest_unprocessed_age_seconds",
    ] {
        assert!(text.contains(metric), "no alert rule on {metric}");
    }
    let alerts = text.matches("- alert:").count();
    let severities = text.matches("severity:").count();
    assert_eq!(alerts, severities, "every alert names a severity");
}
