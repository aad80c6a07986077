//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go
//! does it: the holder renews the Lease every [`RENEW_EVERY`]; another
//! replica takes it once it has seen the same record, unrenewed, for the
//! Lease's whole duration on its own clock (so clocks need not agree);
//! every write carries the resourceVersion it read, so of two replicas
//! that try at once the API server lets one win. A leader that cannot
//! renew for the lease's duration steps down. kube-rs 5 has no elector.
//!
//! The decision ([`Elector::step`]) is pure and table-tested; [`run`] is
//! the thin loop around the API.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;

/// How often the leader renews, and a follower looks.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Who holds the Lease, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// `spec.holderIdentity` ("" when none).
    pub holder: String,
    /// `spec.renewTime` as written (compared, never parsed).
    pub renewed: String,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
}

/// What this replica does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// Take the Lease (it is free or expired): write it with us as holder
    /// and one more transition.
    Take,
    /// We hold it: renew.
    Renew,
    /// Another replica holds it.
    Follow {
        /// Its identity.
        leader: String,
    },
}

/// What this replica is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not decided yet (or the API cannot be reached).
    Unknown,
    /// This replica holds the Lease: it alone writes to the API.
    Leader,
    /// Another replica does.
    Follower(String),
}

/// The election state of one replica: the last record it saw, and when
/// (on its own monotonic clock, in ms).
#[derive(Debug)]
pub struct Elector {
    me: String,
    duration_ms: i64,
    observed: Option<(Record, i64)>,
}

impl Elector {
    /// An elector for identity `me`, with leases of `duration`.
    pub fn new(me: &str, duration: Duration) -> Self {
        Self {
            me: me.to_owned(),
            duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
            observed: None,
        }
    }

    /// The decision at `now_ms` for the Lease as read (`None`: none).
    pub fn step(&mut self, now_ms: i64, lease: Option<&Record>) -> Decision {
        let Some(record) = lease else {
            self.observed = None;
            return Decision::Create;
        };
        if self.observed.as_ref().map(|(r, _)| r) != Some(record) {
            self.observed = Some((record.clone(), now_ms));
        }
        let since = self.observed.as_ref().map_or(now_ms, |(_, at)| *at);
        if record.holder == self.me {
            Decision::Renew
        } else if record.holder.is_empty() || now_ms - since >= self.duration_ms {
            Decision::Take
        } else {
            Decision::Follow {
                leader: record.holder.clone(),
            }
        }
    }

    /// Whether a leader whose last successful renewal was at
    /// `renewed_ms` must step down at `now_ms`.
    pub fn lost(&self, renewed_ms: i64, now_ms: i64) -> bool {
        now_ms - renewed_ms >= self.duration_ms
    }
}

/// The record of a Lease.
pub fn record(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.unwrap_or_default(),
        renewed: spec.renew_time.map(|t| t.0.to_string()).unwrap_or_default(),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// The Lease written when `me` creates, takes or renews it.
fn written(current: Option<&Lease>, name: &str, me: &str, duration: Duration, take: bool) -> Lease {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_else(LeaseSpec::default);
    if take || current.is_none() {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions =
            Some(spec.lease_transitions.unwrap_or(0) + i32::from(current.is_some()));
    }
    spec.holder_identity = Some(me.to_owned());
    spec.lease_duration_seconds = Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX));
    spec.renew_time = Some(now);
    lease.spec = Some(spec);
    lease
}

fn now_ms(start: tokio::time::Instant) -> i64 {
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// One round: read, decide, write. The role it leaves this replica in.
async fn round(
    api: &Api<Lease>,
    elector: &mut Elector,
    name: &str,
    duration: Duration,
    at: i64,
) -> Result<Role, kube::Error> {
    let current = api.get_opt(name).await?;
    let decision = elector.step(at, current.as_ref().map(record).as_ref());
    let me = elector.me.clone();
    let write = match &decision {
        Decision::Follow { leader } => return Ok(Role::Follower(leader.clone())),
        Decision::Create => api
            .create(
                &PostParams::default(),
                &written(None, name, &me, duration, true),
            )
            .await
            .map(|_| ()),
        Decision::Take | Decision::Renew => {
            let take = decision == Decision::Take;
            let lease = written(current.as_ref(), name, &me, duration, take);
            // Carries the resourceVersion read: a concurrent writer wins, we get 409.
            api.replace(name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match write {
        Ok(()) => Ok(Role::Leader),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let leader = api
                .get_opt(name)
                .await?
                .map(|l| record(&l).holder)
                .unwrap_or_default();
            Ok(Role::Follower(leader))
        }
        Err(e) => Err(e),
    }
}

/// Keeps the election going until `stop` turns true, publishing this
/// replica's role in `role`.
pub async fn run(
    client: kube::Client,
    namespace: String,
    name: String,
    me: String,
    duration: Duration,
    role: watch::Sender<Role>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut elector = Elector::new(&me, duration);
    let start = tokio::time::Instant::now();
    let mut renewed: Option<i64> = None;
    loop {
        let at = now_ms(start);
        let next = match round(&api, &mut elector, &name, duration, at).await {
            Ok(Role::Leader) => {
                renewed = Some(at);
                Role::Leader
            }
            Ok(other) => other,
            Err(e) => {
                tracing::warn!(error = %e, lease = %format!("{namespace}/{name}"), "the Lease could not be read or written");
                match renewed {
                    Some(r) if !elector.lost(r, now_ms(start)) => Role::Leader,
                    _ => Role::Unknown,
                }
            }
        };
        if next != Role::Leader {
            renewed = None;
        }
        role.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            match &next {
                Role::Leader => tracing::info!(identity = %me, "this controller is the leader: it writes to the Kubernetes API"),
                Role::Follower(leader) => tracing::info!(%leader, "this controller follows: it serves reads, applies what the leader writes, and takes over if the leader stops renewing"),
                Role::Unknown => tracing::warn!("leadership unknown: this controller does not write to the Kubernetes API"),
            }
            *current = next.clone();
            true
        });
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
    }
    // Hand over at once on a clean stop: release the Lease if we hold it.
    if *role.borrow() == Role::Leader
        && let Ok(Some(mut lease)) = api.get_opt(&name).await
        && record(&lease).holder == me
    {
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        let _ = api.replace(&name, &PostParams::default(), &lease).await;
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
