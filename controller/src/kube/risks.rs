//! What in a pod can undo Vigil's interception, found before it runs. A
//! container running as root (or maybe as root: no `runAsUser` and no
//! `runAsNonRoot`) can change its uid to the sidecar's; one running as the
//! sidecar's uid (or, beside Istio, as Envoy's) is never redirected; one
//! with NET_ADMIN, SYS_ADMIN or `privileged` can rewrite the rules; one
//! that mounts the sidecar's controller token can speak for any workload; a pod
//! on the host's network is not intercepted at all; a pod whose sidecar is
//! missing or altered is not watched. Pure, table-tested; the validating
//! webhook denies such pods in enforcement and warns in learning.

use serde_json::Value;

use super::config::SidecarArgs;
use super::identity::{Namespace, str_at};
use super::inject::{
    Decision, INIT_CONTAINER, PROXY_CONTAINER, SkipReason, TOKEN_VOLUME, decide, inject,
    istio_present,
};

/// One way a pod could get around the sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Risk {
    /// The sidecar is not in the pod.
    NotInjected(SkipReason),
    /// The sidecar is there but not as Vigil renders it.
    Altered {
        /// `vigil-proxy` or `vigil-init`.
        container: &'static str,
        /// The field that differs.
        field: String,
    },
    /// A container runs as root.
    Root {
        /// The container.
        container: String,
    },
    /// A container sets no uid and does not require a non-root one: the
    /// image may run it as root.
    MayRunAsRoot {
        /// The container.
        container: String,
    },
    /// A container requires a non-root uid but names none: its image picks
    /// it, and an image may pick the sidecar's.
    ImageUid {
        /// The container.
        container: String,
    },
    /// A container may gain privileges (`allowPrivilegeEscalation` is not
    /// false and `CAP_SETUID` is not dropped): a setuid program in its image
    /// runs as root and can take the sidecar's uid.
    MayEscalate {
        /// The container.
        container: String,
    },
    /// A container runs as the sidecar's uid, whose traffic is never
    /// redirected.
    ProxyUid {
        /// The container.
        container: String,
        /// The uid.
        uid: i64,
    },
    /// Beside Istio, a container other than `istio-proxy` runs as Envoy's
    /// uid, which both Istio and Vigil let out.
    IstioUid {
        /// The container.
        container: String,
        /// The uid.
        uid: i64,
    },
    /// A container other than the sidecar mounts its controller token:
    /// with it, a notebook can register and report to the controller as
    /// any workload (its own policy, the baseline it is judged by).
    TokenMounted {
        /// The container.
        container: String,
    },
    /// A volume other than the sidecar's holds the Secret of its
    /// controller token, for any container to mount.
    TokenVolume {
        /// The volume.
        volume: String,
        /// The Secret.
        secret: String,
    },
    /// A container may open raw sockets (`NET_RAW` added): packets of any
    /// protocol and type (an ICMP tunnel), from any address.
    NetRaw {
        /// The container.
        container: String,
    },
    /// A container may rewrite the pod's iptables rules.
    NetAdmin {
        /// The container.
        container: String,
        /// `NET_ADMIN`, `SYS_ADMIN`, `ALL` or `privileged`.
        capability: String,
    },
}

impl std::fmt::Display for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInjected(why) => write!(f, "the pod has no vigil-proxy sidecar: {why}"),
            Self::Altered { container, field } => write!(
                f,
                "container {container} is not as Vigil injects it ({field} differs): remove it and let the webhook inject it"
            ),
            Self::Root { container } => write!(
                f,
                "container {container} runs as root (uid 0) and could take the sidecar's uid: set runAsUser to another uid"
            ),
            Self::MayRunAsRoot { container } => write!(
                f,
                "container {container} may run as root (no runAsUser, no runAsNonRoot): set runAsNonRoot: true or a runAsUser"
            ),
            Self::ImageUid { container } => write!(
                f,
                "container {container} sets runAsNonRoot but no runAsUser, so its image picks the uid and may pick the sidecar's, whose traffic is never intercepted: set a runAsUser"
            ),
            Self::MayEscalate { container } => write!(
                f,
                "container {container} may gain privileges (allowPrivilegeEscalation is not false): a setuid program in its image, owned by the sidecar's uid, would run as it, and its traffic is never intercepted; or one owned by root, or with file capabilities, gains them: set allowPrivilegeEscalation: false"
            ),
            Self::ProxyUid { container, uid } => write!(
                f,
                "container {container} runs as uid {uid}, the sidecar's, whose traffic is never intercepted: pick another uid"
            ),
            Self::IstioUid { container, uid } => write!(
                f,
                "container {container} runs as uid {uid}, Envoy's, whose traffic is never intercepted: pick another uid"
            ),
            Self::TokenMounted { container } => write!(
                f,
                "container {container} mounts {TOKEN_VOLUME}, the sidecar's controller token, with which it could register and report as any workload: remove the mount"
            ),
            Self::TokenVolume { volume, secret } => write!(
                f,
                "volume {volume} holds Secret {secret}, the sidecar's controller token, with which a container could register and report as any workload: remove it"
            ),
            Self::NetRaw { container } => write!(
                f,
                "container {container} has NET_RAW and could send raw packets the sidecar never sees (an ICMP tunnel to any host): drop it"
            ),
            Self::NetAdmin {
                container,
                capability,
            } => write!(
                f,
                "container {container} has {capability} and could rewrite the pod's iptables rules: drop it"
            ),
        }
    }
}

/// The risks of `pod` in `namespace`, where injection applies (none when
/// neither the namespace nor the pod asked for it).
pub fn risks(pod: &Value, namespace: &Namespace, args: &SidecarArgs) -> Vec<Risk> {
    match decide(pod, namespace) {
        Decision::Skip(SkipReason::NotEnabled | SkipReason::NamespaceDisabled) => Vec::new(),
        Decision::Skip(reason) => vec![Risk::NotInjected(reason)],
        Decision::Inject => {
            let expected = inject(pod, namespace, args);
            let mut out = sidecar_risks(pod, &expected);
            let istio = istio_present(pod, namespace);
            for (name, container) in watched_containers(pod) {
                out.extend(container_risks(pod, name, container, args, istio));
            }
            out.extend(token_risks(pod, args));
            out
        }
    }
}

/// The containers to check: app containers, ephemeral containers, and the
/// init containers that run after `vigil-init` (those before it cannot
/// undo its rules; any that come after, including native sidecars, can).
fn watched_containers(pod: &Value) -> Vec<(&str, &Value)> {
    let list = |key: &str| {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    let inits = list("initContainers");
    let after_init = inits
        .iter()
        .position(|c| str_at(c, "/name") == INIT_CONTAINER)
        .map_or(0, |i| i + 1);
    inits[after_init..]
        .iter()
        .chain(list("containers"))
        .chain(list("ephemeralContainers"))
        .map(|c| (str_at(c, "/name"), c))
        .filter(|(name, _)| *name != PROXY_CONTAINER && *name != INIT_CONTAINER)
        .collect()
}

/// Vigil's two containers, compared with what Vigil renders for this pod.
fn sidecar_risks(pod: &Value, expected: &Value) -> Vec<Risk> {
    let mut out = Vec::new();
    for (list, name) in [
        ("containers", PROXY_CONTAINER),
        ("initContainers", INIT_CONTAINER),
    ] {
        let find = |p: &Value| -> Option<Value> {
            p.pointer(&format!("/spec/{list}"))?
                .as_array()?
                .iter()
                .find(|c| str_at(c, "/name") == name)
                .cloned()
        };
        let (Some(have), Some(want)) = (find(pod), find(expected)) else {
            out.push(Risk::Altered {
                container: name,
                field: "presence".into(),
            });
            continue;
        };
        for field in ["image", "command", "args", "securityContext"] {
            if have.get(field) != want.get(field) {
                out.push(Risk::Altered {
                    container: name,
                    field: field.into(),
                });
            }
        }
        // Other webhooks (Kubeflow's PodDefaults) may add mounts to every
        // container: Vigil's own must be there as rendered.
        let mounts = |c: &Value| {
            c.get("volumeMounts")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let have_mounts = mounts(&have);
        if !mounts(&want).iter().all(|m| have_mounts.contains(m)) {
            out.push(Risk::Altered {
                container: name,
                field: "volumeMounts".into(),
            });
        }
        if vigil_env(&have) != vigil_env(&want) {
            out.push(Risk::Altered {
                container: name,
                field: "env".into(),
            });
        }
    }
    out
}

/// The `VIGIL_*` variables a container ends up with (the last entry of a
/// name wins, as in Kubernetes).
fn vigil_env(container: &Value) -> std::collections::BTreeMap<String, Value> {
    container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| str_at(e, "/name").starts_with("VIGIL_"))
        .map(|e| (str_at(e, "/name").to_owned(), e.clone()))
        .collect()
}

/// Who else can read the sidecar's controller token: any container but
/// the sidecar that mounts its volume (init containers before `vigil-init`
/// too: they can copy it to a shared volume), and any other volume of its
/// Secret (a `secret` or `projected` one).
fn token_risks(pod: &Value, args: &SidecarArgs) -> Vec<Risk> {
    let list = |key: &str| {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    let mut out = Vec::new();
    let containers = (list("initContainers").iter())
        .chain(list("containers"))
        .chain(list("ephemeralContainers"));
    for container in containers {
        let name = str_at(container, "/name");
        let mounts = container.pointer("/volumeMounts").and_then(Value::as_array);
        let mounted = mounts
            .into_iter()
            .flatten()
            .any(|m| str_at(m, "/name") == TOKEN_VOLUME);
        if mounted && name != PROXY_CONTAINER {
            out.push(Risk::TokenMounted {
                container: name.to_owned(),
            });
        }
    }
    let secret = args.proxy_token_secret.as_str();
    for volume in list("volumes") {
        let name = str_at(volume, "/name");
        let projected = volume
            .pointer("/projected/sources")
            .and_then(Value::as_array);
        let holds = str_at(volume, "/secret/secretName") == secret
            || (projected.into_iter().flatten()).any(|s| str_at(s, "/secret/name") == secret);
        if holds && name != TOKEN_VOLUME {
            out.push(Risk::TokenVolume {
                volume: name.to_owned(),
                secret: secret.to_owned(),
            });
        }
    }
    out
}

/// The risks of one container.
fn container_risks(
    pod: &Value,
    name: &str,
    container: &Value,
    args: &SidecarArgs,
    istio: bool,
) -> Vec<Risk> {
    let mut out = Vec::new();
    let container_name = name.to_owned();
    let pick = |field: &str| {
        container
            .pointer(&format!("/securityContext/{field}"))
            .filter(|v| !v.is_null())
            .or_else(|| pod.pointer(&format!("/spec/securityContext/{field}")))
            .filter(|v| !v.is_null())
    };
    let uid = pick("runAsUser").and_then(Value::as_i64);
    let non_root = pick("runAsNonRoot").and_then(Value::as_bool) == Some(true);
    match uid {
        Some(0) => out.push(Risk::Root {
            container: container_name.clone(),
        }),
        Some(uid) if uid == args.proxy_uid => out.push(Risk::ProxyUid {
            container: container_name.clone(),
            uid,
        }),
        Some(uid) if istio && uid == args.istio_uid && name != "istio-proxy" => {
            out.push(Risk::IstioUid {
                container: container_name.clone(),
                uid,
            })
        }
        None if !non_root => out.push(Risk::MayRunAsRoot {
            container: container_name.clone(),
        }),
        None => out.push(Risk::ImageUid {
            container: container_name.clone(),
        }),
        _ => {}
    }
    // A uid that is no risk itself holds only if the container cannot
    // become root through a setuid program.
    if out.is_empty() && may_escalate(container) {
        out.push(Risk::MayEscalate {
            container: container_name.clone(),
        });
    }
    if container
        .pointer("/securityContext/privileged")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.push(Risk::NetAdmin {
            container: container_name.clone(),
            capability: "privileged".into(),
        });
    }
    let added = container
        .pointer("/securityContext/capabilities/add")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    for cap in added {
        let bare = cap.to_ascii_uppercase();
        let bare = bare.strip_prefix("CAP_").unwrap_or(&bare).to_owned();
        if matches!(bare.as_str(), "NET_ADMIN" | "SYS_ADMIN" | "ALL") {
            out.push(Risk::NetAdmin {
                container: container_name.clone(),
                capability: bare,
            });
        } else if bare == "NET_RAW" {
            out.push(Risk::NetRaw {
                container: container_name.clone(),
            });
        }
    }
    out
}

/// Whether a program in `container`'s image can change its identity:
/// `allowPrivilegeEscalation` (a container field only; the kubelet's
/// default is true) is not false. Then a setuid program runs as its owner,
/// and one owned by the sidecar's uid (mode 4755, which any image or
/// writable volume may hold) needs no capability at all: only
/// `no_new_privs` stops it, whatever the capabilities dropped (as Pod
/// Security's *restricted* level requires).
fn may_escalate(container: &Value) -> bool {
    container
        .pointer("/securityContext/allowPrivilegeEscalation")
        .and_then(Value::as_bool)
        != Some(false)
}

#[cfg(test)]
mod tests;
