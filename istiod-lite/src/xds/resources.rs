//! Encoded xDS resources: one immutable [`ResourceSet`] per type URL per config generation, the
//! delta between consecutive generations computed once (not once per client), and stable
//! versions (a hash of the encoded bytes) so a client that reconnects, even to a restarted
//! control plane, is sent only what really changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use mesh_core::proto::envoy::config::core::v3::ControlPlane;
use mesh_core::proto::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
use mesh_core::proto::istio::workload::Workload;
use mesh_core::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WAYPOINT_SERVICE_TYPE_URL};
use prost::Message;

use crate::translate::Translation;

/// One encoded resource.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub version: String,
    pub body: Bytes,
}

static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

/// All resources of one type at one generation, by name.
#[derive(Debug)]
pub struct ResourceSet {
    /// Unique per set, so "what a client was sent" can be compared cheaply.
    pub id: u64,
    pub entries: BTreeMap<String, Arc<Entry>>,
}

impl ResourceSet {
    pub fn new(entries: BTreeMap<String, Arc<Entry>>) -> Arc<ResourceSet> {
        Arc::new(ResourceSet {
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            entries,
        })
    }

    pub fn empty() -> Arc<ResourceSet> {
        ResourceSet::new(BTreeMap::new())
    }
}

/// What changed between two sets.
#[derive(Debug, Default)]
pub struct Delta {
    pub changed: Vec<(String, Arc<Entry>)>,
    pub removed: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }

    /// Everything in `new` that `old` lacks or has at another version, and what `new` dropped.
    pub fn between(old: &ResourceSet, new: &ResourceSet) -> Delta {
        let mut delta = Delta::default();
        let mut o = old.entries.iter().peekable();
        let mut n = new.entries.iter().peekable();
        loop {
            match (o.peek(), n.peek()) {
                (None, None) => break,
                (Some((on, _)), None) => {
                    delta.removed.push((*on).clone());
                    o.next();
                }
                (None, Some((nn, ne))) => {
                    delta.changed.push(((*nn).clone(), (*ne).clone()));
                    n.next();
                }
                (Some((on, oe)), Some((nn, ne))) => match on.cmp(nn) {
                    std::cmp::Ordering::Less => {
                        delta.removed.push((*on).clone());
                        o.next();
                    }
                    std::cmp::Ordering::Greater => {
                        delta.changed.push(((*nn).clone(), (*ne).clone()));
                        n.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if !Arc::ptr_eq(oe, ne) && oe.version != ne.version {
                            delta.changed.push(((*nn).clone(), (*ne).clone()));
                        }
                        o.next();
                        n.next();
                    }
                },
            }
        }
        delta
    }

    /// What a client that says it holds `versions` (name -> version) must be sent.
    pub fn from_versions(versions: &HashMap<String, String>, new: &ResourceSet) -> Delta {
        let mut delta = Delta::default();
        for (name, entry) in &new.entries {
            if versions.get(name) != Some(&entry.version) {
                delta.changed.push((name.clone(), entry.clone()));
            }
        }
        for name in versions.keys() {
            if !new.entries.contains_key(name) {
                delta.removed.push(name.clone());
            }
        }
        delta.removed.sort();
        delta
    }
}

/// The types this server serves: the two a ztunnel subscribes to, in its order, then the
/// waypoints' own.
pub const TYPE_URLS: [&str; 3] = [
    ADDRESS_TYPE_URL,
    AUTHORIZATION_TYPE_URL,
    WAYPOINT_SERVICE_TYPE_URL,
];

/// A delta from the previous generation's set, and its encoding (made once, on first use).
#[derive(Debug)]
pub struct StepDelta {
    /// Id of the set this delta starts from.
    pub from: u64,
    pub delta: Delta,
    encoded: OnceLock<Bytes>,
}

/// Every served type at one config generation.
#[derive(Debug)]
pub struct XdsState {
    pub generation: u64,
    /// When the config change behind this state was seen (for push latency).
    pub changed_at: Instant,
    pub sets: HashMap<&'static str, Arc<ResourceSet>>,
    /// Per type: the delta from the previous generation's set.
    pub deltas: HashMap<&'static str, StepDelta>,
    /// Per type: the encoded response carrying the whole set (made once, on first use).
    full: HashMap<&'static str, OnceLock<Bytes>>,
    /// Address aliases `<network>/<ip>` -> the resource name (workload UID or service name),
    /// for clients that look addresses up by IP; built on first use (only on-demand clients
    /// need it).
    aliases: OnceLock<HashMap<String, String>>,
}

impl XdsState {
    fn new(
        generation: u64,
        changed_at: Instant,
        sets: HashMap<&'static str, Arc<ResourceSet>>,
        deltas: HashMap<&'static str, StepDelta>,
    ) -> XdsState {
        let full = sets.keys().map(|t| (*t, OnceLock::new())).collect();
        XdsState {
            generation,
            changed_at,
            sets,
            deltas,
            full,
            aliases: OnceLock::new(),
        }
    }

    /// The resource an alias (`<network>/<ip>`) names.
    pub fn alias(&self, name: &str) -> Option<&str> {
        self.aliases
            .get_or_init(|| {
                self.sets
                    .get(ADDRESS_TYPE_URL)
                    .map(|s| aliases(s))
                    .unwrap_or_default()
            })
            .get(name)
            .map(String::as_str)
    }

    pub fn empty() -> XdsState {
        let sets = TYPE_URLS
            .iter()
            .map(|t| (*t, ResourceSet::empty()))
            .collect();
        XdsState::new(0, Instant::now(), sets, HashMap::new())
    }

    pub fn set(&self, type_url: &str) -> Option<&Arc<ResourceSet>> {
        self.sets.get(type_url)
    }

    /// The response body that sends a type's whole set, shared by every client.
    pub fn full_response(&self, type_url: &str, identifier: &str) -> Bytes {
        let (Some(set), Some(cell)) = (self.sets.get(type_url), self.full.get(type_url)) else {
            return encode_response(type_url, &Delta::default(), self.generation, identifier);
        };
        cell.get_or_init(|| {
            let delta = Delta {
                changed: set
                    .entries
                    .iter()
                    .map(|(n, e)| (n.clone(), e.clone()))
                    .collect(),
                removed: Vec::new(),
            };
            encode_response(type_url, &delta, self.generation, identifier)
        })
        .clone()
    }

    /// The shared response body for a client that holds set `from`, if this state was built
    /// directly on it. An empty body means nothing changed.
    pub fn shared_delta(&self, type_url: &str, from: u64, identifier: &str) -> Option<Bytes> {
        let step = self.deltas.get(type_url).filter(|s| s.from == from)?;
        if step.delta.is_empty() {
            return Some(Bytes::new());
        }
        Some(
            step.encoded
                .get_or_init(|| encode_response(type_url, &step.delta, self.generation, identifier))
                .clone(),
        )
    }
}

/// Encodes a `DeltaDiscoveryResponse` without its nonce (each stream appends its own).
pub fn encode_response(type_url: &str, delta: &Delta, generation: u64, identifier: &str) -> Bytes {
    let resp = DeltaDiscoveryResponse {
        system_version_info: generation.to_string(),
        type_url: type_url.to_string(),
        resources: delta
            .changed
            .iter()
            .map(|(name, entry)| Resource {
                name: name.clone(),
                version: entry.version.clone(),
                resource: Some(prost_types::Any {
                    type_url: type_url.to_string(),
                    value: entry.body.to_vec(),
                }),
                ..Default::default()
            })
            .collect(),
        removed_resources: delta.removed.clone(),
        control_plane: Some(ControlPlane {
            identifier: identifier.to_string(),
        }),
        nonce: String::new(),
    };
    Bytes::from(resp.encode_to_vec())
}

/// FNV-1a: a stable hash (unlike std's), so versions mean the same across restarts.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn entry(body: Vec<u8>, previous: Option<&Arc<Entry>>) -> Arc<Entry> {
    let version = format!("{:016x}", fnv1a(&body));
    match previous {
        // Reuse the previous allocation when nothing changed, so deltas compare by pointer.
        Some(p) if p.version == version && p.body[..] == body[..] => p.clone(),
        _ => Arc::new(Entry {
            version,
            body: Bytes::from(body),
        }),
    }
}

/// Encodings of workloads, by UID, with the workload they encode: a workload translation did
/// not redo (the same `Arc`) is not encoded again.
#[derive(Default)]
pub struct EncodeCache {
    workloads: HashMap<String, (Arc<Workload>, Arc<Entry>)>,
}

/// `istio.workload.Address` with `workload` (field 1) or `service` (field 2) set, encoded
/// without copying the message into an `Address` first.
fn encode_address<M: Message>(field: u32, m: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(m.encoded_len() + 6);
    prost::encoding::message::encode(field, m, &mut buf);
    buf
}

/// Encodes a translation into the next state, reusing unchanged entries of `previous`.
pub fn build_state(
    translation: &Translation,
    previous: &XdsState,
    cache: &mut EncodeCache,
    generation: u64,
    changed_at: Instant,
) -> XdsState {
    let prev_addr = previous.sets.get(ADDRESS_TYPE_URL);
    let prev_auth = previous.sets.get(AUTHORIZATION_TYPE_URL);
    let prev_waypoint = previous.sets.get(WAYPOINT_SERVICE_TYPE_URL);
    let lookup =
        |set: Option<&Arc<ResourceSet>>, name: &str| set.and_then(|s| s.entries.get(name)).cloned();

    // Collected in order and built in bulk: inserting one by one compares long names.
    let mut addresses =
        Vec::with_capacity(translation.workloads.len() + translation.services.len());
    let mut next_cache = HashMap::with_capacity(translation.workloads.len());
    for (uid, w) in &translation.workloads {
        let e = match cache.workloads.remove(uid) {
            Some((cw, ce)) if Arc::ptr_eq(&cw, w) => ce,
            _ => entry(
                encode_address(1, w.as_ref()),
                lookup(prev_addr, uid).as_ref(),
            ),
        };
        addresses.push((uid.clone(), e.clone()));
        next_cache.insert(uid.clone(), (w.clone(), e));
    }
    cache.workloads = next_cache;
    for (name, s) in &translation.services {
        let body = encode_address(2, s);
        addresses.push((name.clone(), entry(body, lookup(prev_addr, name).as_ref())));
    }
    let mut authorizations = BTreeMap::new();
    for (name, a) in &translation.authorizations {
        let body = a.encode_to_vec();
        authorizations.insert(name.clone(), entry(body, lookup(prev_auth, name).as_ref()));
    }
    let mut waypoint_services = BTreeMap::new();
    for (name, w) in &translation.waypoint_services {
        let body = w.encode_to_vec();
        waypoint_services.insert(
            name.clone(),
            entry(body, lookup(prev_waypoint, name).as_ref()),
        );
    }

    let mut sets = HashMap::new();
    let mut deltas = HashMap::new();
    for (type_url, entries) in [
        (
            ADDRESS_TYPE_URL,
            addresses.into_iter().collect::<BTreeMap<_, _>>(),
        ),
        (AUTHORIZATION_TYPE_URL, authorizations),
        (WAYPOINT_SERVICE_TYPE_URL, waypoint_services),
    ] {
        let old = previous
            .sets
            .get(type_url)
            .cloned()
            .unwrap_or_else(ResourceSet::empty);
        // Unchanged content keeps the old set, so clients have nothing to do.
        let unchanged = old.entries.len() == entries.len()
            && old
                .entries
                .iter()
                .zip(entries.iter())
                .all(|((on, oe), (nn, ne))| on == nn && Arc::ptr_eq(oe, ne));
        if unchanged {
            sets.insert(type_url, old);
            continue;
        }
        let new = ResourceSet::new(entries);
        let step = StepDelta {
            from: old.id,
            delta: Delta::between(&old, &new),
            encoded: OnceLock::new(),
        };
        deltas.insert(type_url, step);
        sets.insert(type_url, new);
    }
    XdsState::new(generation, changed_at, sets, deltas)
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// `<network>/<ip>` of every workload and service address, read back from the encoded set.
fn aliases(set: &ResourceSet) -> HashMap<String, String> {
    use mesh_core::proto::istio::workload::{address::Type, Address};
    let mut out = HashMap::new();
    for (name, entry) in &set.entries {
        let Ok(addr) = Address::decode(&entry.body[..]) else {
            continue;
        };
        let pairs: Vec<(String, Vec<u8>)> = match addr.r#type {
            Some(Type::Workload(w)) => w
                .addresses
                .into_iter()
                .map(|a| (w.network.clone(), a))
                .collect(),
            Some(Type::Service(s)) => s
                .addresses
                .into_iter()
                .map(|a| (a.network, a.address))
                .collect(),
            None => continue,
        };
        for (network, ip) in pairs {
            if let Some(ip) = ip_text(&ip) {
                out.insert(format!("{network}/{ip}"), name.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, &str)]) -> Arc<ResourceSet> {
        ResourceSet::new(
            items
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        Arc::new(Entry {
                            version: v.to_string(),
                            body: Bytes::from(v.to_string()),
                        }),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn delta_between_sets() {
        let old = set(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let new = set(&[("b", "2"), ("c", "1"), ("d", "1")]);
        let d = Delta::between(&old, &new);
        let changed: Vec<&str> = d.changed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(changed, vec!["b", "d"]);
        assert_eq!(d.removed, vec!["a".to_string()]);
    }

    #[test]
    fn delta_from_client_versions() {
        let new = set(&[("a", "1"), ("b", "2")]);
        let versions: HashMap<String, String> = [("a", "1"), ("b", "1"), ("gone", "1")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let d = Delta::from_versions(&versions, &new);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].0, "b");
        assert_eq!(d.removed, vec!["gone".to_string()]);
    }
}
