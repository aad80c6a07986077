//! The report task: streams batches to the controller and keeps those not
//! yet acknowledged, re-sending them in order after a reconnect.

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use vigil_proto::v1;

use super::{Backoff, ControlError, Target};

/// How many unacknowledged batches are kept.
pub const QUEUE_CAPACITY: usize = 600;

/// Unacknowledged batches, oldest first, bounded.
#[derive(Debug)]
pub struct ReportQueue {
    batches: VecDeque<v1::ReportBatch>,
    capacity: usize,
}

impl ReportQueue {
    /// An empty queue holding at most `capacity` batches (at least 1).
    pub fn new(capacity: usize) -> Self {
        ReportQueue {
            batches: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends a batch. When full, the oldest batch is dropped and what it
    /// counted is added to the new batch's `dropped`.
    pub fn push(&mut self, mut batch: v1::ReportBatch) -> &v1::ReportBatch {
        while self.batches.len() >= self.capacity {
            if let Some(old) = self.batches.pop_front() {
                let lost: u64 = old.observations.iter().map(|o| o.count).sum();
                batch.dropped += lost + old.dropped;
            }
        }
        self.batches.push_back(batch);
        self.batches
            .back()
            .unwrap_or_else(|| unreachable!("just pushed"))
    }

    /// Forgets every batch with `seq <= acked`.
    pub fn ack(&mut self, acked: u64) {
        while self.batches.front().is_some_and(|b| b.seq <= acked) {
            self.batches.pop_front();
        }
    }

    /// The unacknowledged batches, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &v1::ReportBatch> {
        self.batches.iter()
    }

    /// True when every batch was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// Spawns the report task. It ends once `batches` is closed and everything
/// was acknowledged (or when aborted).
pub fn spawn(target: Target, mut batches: mpsc::Receiver<v1::ReportBatch>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut queue = ReportQueue::new(QUEUE_CAPACITY);
        let mut backoff = Backoff::default();
        let mut closed = false;
        loop {
            match stream_reports(&target, &mut queue, &mut batches, &mut closed, &mut backoff).await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "report stream to the controller failed; will resend")
                }
            }
            let wake = tokio::time::Instant::now() + backoff.next_delay();
            loop {
                if closed && queue.is_empty() {
                    return;
                }
                tokio::select! {
                    batch = batches.recv(), if !closed => match batch {
                        Some(batch) => { queue.push(batch); }
                        None => closed = true,
                    },
                    _ = tokio::time::sleep_until(wake) => break,
                }
            }
        }
    })
}

async fn stream_reports(
    target: &Target,
    queue: &mut ReportQueue,
    batches: &mut mpsc::Receiver<v1::ReportBatch>,
    closed: &mut bool,
    backoff: &mut Backoff,
) -> Result<(), ControlError> {
    let mut client = target.client().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    for batch in queue.iter() {
        let _ = tx.send(batch.clone());
    }
    let request = target.request(UnboundedReceiverStream::new(rx)).await?;
    let mut acks = client.report(request).await?.into_inner();
    backoff.reset();
    loop {
        if *closed && queue.is_empty() {
            return Ok(());
        }
        tokio::select! {
            batch = batches.recv(), if !*closed => match batch {
                Some(batch) => {
                    let _ = tx.send(queue.push(batch).clone());
                }
                None => *closed = true,
            },
            ack = acks.message() => match ack? {
                Some(ack) => queue.ack(ack.seq),
                None => return Err(ControlError::StreamEnded),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, count: u64) -> v1::ReportBatch {
        v1::ReportBatch {
            seq,
            observations: vec![v1::Observation {
                count,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn acks_and_overflow() {
        let mut q = ReportQueue::new(3);
        for seq in 1..=3 {
            q.push(batch(seq, 10));
        }
        let pushed = q.push(batch(4, 1));
        assert_eq!(
            pushed.dropped, 10,
            "oldest batch's count moves into dropped"
        );
        let seqs: Vec<u64> = q.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        q.ack(1); // already gone: no-op
        assert_eq!(q.iter().count(), 3);
        q.ack(3);
        let seqs: Vec<u64> = q.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![4]);
        q.ack(10);
        assert!(q.is_empty());
    }
}
