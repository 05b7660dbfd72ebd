//! Model-based property test of the outbox: random sequences of append, mark-sent, ack, close-and-reopen
//! and budget evictions are applied both to the SQLite outbox and to a small in-memory model of its spec;
//! after every step the two must hold the same records, the same byte count, and agree on every eviction.
//! Failing cases are shrunk and saved under `proptest-regressions/` (committed).

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::collections::BTreeMap;
use tierline_edge::config::OutboxConfig;
use tierline_edge::outbox::{Outbox, Record};
use tierline_shared::config::ByteSize;
use tierline_shared::wire::ForwardReason;

const BUDGET: u64 = 2_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        audit: bool,
        score: u8,
        len: u16,
        count: u8,
    },
    MarkSent {
        pick: u16,
    },
    Ack {
        pick: u16,
    },
    AckUnknown,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u8..=10, 1u16..700, 1u8..=3).prop_map(|(audit, score, len, count)| Op::Append { audit, score, len, count }),
        2 => any::<u16>().prop_map(|pick| Op::MarkSent { pick }),
        3 => any::<u16>().prop_map(|pick| Op::Ack { pick }),
        1 => Just(Op::AckUnknown),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Held {
    audit: bool,
    score: f32,
    len: u64,
}

/// The spec, in memory.
#[derive(Default)]
struct Model {
    held: BTreeMap<u64, Held>,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.held.values().map(|h| h.len).sum()
    }

    /// Appends a batch; returns the evicted seqs in order (stored ones displaced, or arriving ones refused),
    /// or None if the batch is refused as a whole (a record larger than the budget).
    fn append(&mut self, batch: &[(u64, Held)]) -> Option<Vec<u64>> {
        if batch.iter().any(|(_, h)| h.len > BUDGET) {
            return None;
        }
        // The spec's order: audits before suspects, then lower scores, then older seqs.
        let rank = |seq: u64, h: &Held| (!h.audit, h.score, seq);
        let mut evicted = Vec::new();
        for &(seq, h) in batch {
            let mut admitted = true;
            while self.bytes() + h.len > BUDGET {
                let (&victim, held) = self
                    .held
                    .iter()
                    .min_by(|(sa, a), (sb, b)| rank(**sa, a).partial_cmp(&rank(**sb, b)).unwrap())
                    .unwrap();
                // The arriving record leaves instead if it ranks strictly lower (it is the newest among equals).
                if (!h.audit, h.score) < (!held.audit, held.score) {
                    admitted = false;
                    break;
                }
                self.held.remove(&victim);
                evicted.push(victim);
            }
            if admitted {
                self.held.insert(seq, h);
            } else {
                evicted.push(seq);
            }
        }
        Some(evicted)
    }
}

fn cfg(dir: &std::path::Path) -> OutboxConfig {
    OutboxConfig {
        path: dir.join("outbox.db"),
        max_bytes: ByteSize(BUDGET),
        ..OutboxConfig::default()
    }
}

async fn check(ob: &Outbox, model: &Model) {
    assert_eq!(ob.held(), model.held.len(), "records in the send index");
    let mut seqs: Vec<u64> = ob
        .due(i64::MAX, 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    let expected: Vec<u64> = model.held.keys().copied().collect();
    assert_eq!(seqs, expected, "records held");
    let backlog = ob.backlog().await.unwrap();
    assert_eq!(backlog.bytes, model.bytes(), "stored bytes");
    assert!(backlog.bytes <= BUDGET, "budget");
    assert_eq!(backlog.frames, model.held.len() as u64);
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(&cfg(dir.path())).await.unwrap();
    let mut model = Model::default();
    let mut seqs = ob.reserve_seqs().await.unwrap();
    let mut last_seq = None;
    let mut evictions = 0u64;
    for op in ops {
        match op {
            Op::Append {
                audit,
                score,
                len,
                count,
            } => {
                let mut batch = Vec::new();
                let mut records = Vec::new();
                for _ in 0..count {
                    let seq = match seqs.next() {
                        Some(s) => s,
                        None => {
                            seqs = ob.reserve_seqs().await.unwrap();
                            seqs.next().unwrap()
                        }
                    };
                    assert!(
                        last_seq.is_none_or(|l| seq > l),
                        "sequence numbers increase"
                    );
                    last_seq = Some(seq);
                    let h = Held {
                        audit,
                        score: f32::from(score) / 10.0,
                        len: u64::from(len),
                    };
                    batch.push((seq, h));
                    records.push(Record {
                        seq,
                        frame_id: format!("e-{seq}"),
                        camera_id: "c".into(),
                        capture_time_us: seq as i64,
                        reason: if audit {
                            ForwardReason::Audit
                        } else {
                            ForwardReason::Suspect
                        },
                        score: h.score,
                        encoding: 1,
                        image: vec![7; usize::from(len)],
                        attempts: 0,
                        local_action: None,
                        image_sha256: Vec::new(),
                        provenance: Default::default(),
                        edge_label: String::new(),
                    });
                }
                let expected = model.append(&batch);
                match ob.append(&records).await {
                    Ok(ev) => {
                        let got: Vec<u64> = ev.iter().map(|e| e.seq).collect();
                        assert_eq!(Some(got.clone()), expected, "evictions");
                        evictions += got.len() as u64;
                    }
                    Err(_) => {
                        assert_eq!(expected, None, "outbox refused a batch the model accepts")
                    }
                }
            }
            Op::MarkSent { pick } => {
                if let Some(&seq) = model
                    .held
                    .keys()
                    .nth(usize::from(pick) % model.held.len().max(1))
                {
                    ob.mark_sent(&[(seq, i64::MAX / 2)]);
                }
            }
            Op::Ack { pick } => {
                if let Some(&seq) = model
                    .held
                    .keys()
                    .nth(usize::from(pick) % model.held.len().max(1))
                {
                    assert_eq!(ob.ack(&[seq]).await.unwrap().len(), 1);
                    model.held.remove(&seq);
                }
            }
            Op::AckUnknown => assert!(ob.ack(&[u64::MAX / 4]).await.unwrap().is_empty()),
            Op::Reopen => {
                ob.close().await;
                ob = Outbox::open(&cfg(dir.path())).await.unwrap();
                seqs = ob.reserve_seqs().await.unwrap();
                // After reopen everything held is due again.
                assert_eq!(ob.in_flight(0), 0);
            }
        }
        check(&ob, &model).await;
    }
    assert_eq!(
        ob.evicted_total().await.unwrap(),
        evictions,
        "durable eviction count"
    );
    ob.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn outbox_follows_its_spec(ops in proptest::collection::vec(op(), 1..40)) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(ops));
    }
}
