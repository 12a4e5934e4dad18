//! The autoscalers' metrics, kept on the Raft leader: a bounded ring buffer of samples per
//! instance and metric, fed by
//!
//! - the agents' usage reports (`status.usage` of every Instance: cpu millicores over the
//!   report window, memory working set), read from each committed Instance change and
//!   from the store at every sync (duplicates are dropped by timestamp);
//! - custom metrics scraped from the instances of a workload whose HPA names a Pods
//!   metric: `GET http://<instance ip>:<port><path>`, Prometheus text format. The port is
//!   the pod template's `prometheus.io/port` annotation, else its container port named
//!   `metrics`, else its first container port; the path is `prometheus.io/path`, default
//!   `/metrics`. The value is the sum of the samples with exactly the metric's name.
//!
//! A sample for the algorithm is the mean of a series over the metric window ending at its
//! newest point. Series of deleted instances are dropped; points older than
//! [`RETENTION_MS`] or past [`CAPACITY`] fall off. The buffer lives in this leader's
//! memory only: a new leader starts empty and has samples again within one report period
//! (missing samples meanwhile are handled conservatively by the algorithm).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use super::hpa::Sample;
use crate::model::workload::PodTemplate;

/// Points kept per series: an hour of 5 s reports.
pub const CAPACITY: usize = 720;
/// Points older than this are dropped.
pub const RETENTION_MS: u64 = 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricName {
    Cpu,
    Memory,
    /// A custom metric scraped from the instance (e.g. http_requests_per_second).
    Custom(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    at_ms: u64,
    value_milli: i64,
    window_ms: u64,
}

#[derive(Debug, Default)]
struct InstanceSeries {
    /// The incarnation the points belong to; a recreated instance starts over.
    uid: String,
    series: BTreeMap<MetricName, VecDeque<Point>>,
    /// Readiness as last seen, and when it was first seen so.
    ready: Option<(bool, u64)>,
}

/// Every instance's series, by (namespace, instance name).
#[derive(Debug, Default)]
pub struct MetricStore {
    instances: HashMap<(String, String), InstanceSeries>,
}

impl MetricStore {
    fn entry(&mut self, ns: &str, name: &str, uid: &str) -> &mut InstanceSeries {
        let e = self
            .instances
            .entry((ns.to_string(), name.to_string()))
            .or_default();
        if e.uid != uid {
            *e = InstanceSeries {
                uid: uid.to_string(),
                ..Default::default()
            };
        }
        e
    }

    /// Adds a point unless the series already has one at or after `at_ms`.
    pub fn record(
        &mut self,
        (ns, name, uid): (&str, &str, &str),
        metric: MetricName,
        at_ms: u64,
        value_milli: i64,
        window_ms: u64,
    ) {
        let e = self.entry(ns, name, uid);
        let points = e.series.entry(metric).or_default();
        if points.back().is_some_and(|p| p.at_ms >= at_ms) {
            return;
        }
        if points.len() == CAPACITY {
            points.pop_front();
        }
        points.push_back(Point {
            at_ms,
            value_milli,
            window_ms,
        });
        while points
            .front()
            .is_some_and(|p| p.at_ms + RETENTION_MS < at_ms)
        {
            points.pop_front();
        }
    }

    /// Records an instance's usage report and readiness, seen at `now_ms`.
    pub fn ingest(&mut self, instance: (&str, &str, &str), status: &IngestStatus, now_ms: u64) {
        let (ns, name, uid) = instance;
        let e = self.entry(ns, name, uid);
        match e.ready {
            Some((r, _)) if r == status.ready => {}
            _ => e.ready = Some((status.ready, now_ms)),
        }
        let Some(u) = &status.usage else { return };
        let at = crate::orchestrator::controllers::parse_ms(&u.timestamp);
        if at == 0 {
            return;
        }
        let window = u.window_ms.max(1);
        self.record(instance, MetricName::Cpu, at, u.cpu_millis as i64, window);
        self.record(
            instance,
            MetricName::Memory,
            at,
            (u.memory_bytes as i64).saturating_mul(1000),
            window,
        );
    }

    /// When this leader saw the instance stop being ready (None: ready, or never seen
    /// ready and then not).
    pub fn unready_since(&self, ns: &str, name: &str) -> Option<u64> {
        let e = self.instances.get(&(ns.to_string(), name.to_string()))?;
        match e.ready {
            Some((false, since)) if since > 0 => Some(since),
            _ => None,
        }
    }

    /// The mean over `window_ms` up to the newest point, if that is younger than
    /// `max_age_ms` at `now_ms`.
    pub fn sample(
        &self,
        (ns, name, uid): (&str, &str, &str),
        metric: &MetricName,
        window_ms: u64,
        max_age_ms: u64,
        now_ms: u64,
    ) -> Option<Sample> {
        let e = self.instances.get(&(ns.to_string(), name.to_string()))?;
        if e.uid != uid {
            return None;
        }
        let points = e.series.get(metric)?;
        let last = points.back()?;
        if last.at_ms + max_age_ms < now_ms {
            return None;
        }
        let from = last.at_ms.saturating_sub(window_ms);
        let recent: Vec<&Point> = points.iter().filter(|p| p.at_ms > from).collect();
        let first = recent.first().copied().unwrap_or(last);
        let sum: i64 = recent.iter().map(|p| p.value_milli).sum();
        Some(Sample {
            value_milli: sum / recent.len().max(1) as i64,
            timestamp_ms: last.at_ms,
            window_ms: last.at_ms - first.at_ms + first.window_ms,
        })
    }

    /// Every point of a series: (time, value in milli-units).
    pub fn points(
        &self,
        (ns, name, uid): (&str, &str, &str),
        metric: &MetricName,
    ) -> Vec<(u64, i64)> {
        self.instances
            .get(&(ns.to_string(), name.to_string()))
            .filter(|e| e.uid == uid)
            .and_then(|e| e.series.get(metric))
            .map(|p| p.iter().map(|p| (p.at_ms, p.value_milli)).collect())
            .unwrap_or_default()
    }

    /// Drops the series of instances `keep` says are gone.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str, &str) -> bool) {
        self.instances
            .retain(|(ns, name), e| keep(ns, name, &e.uid));
    }

    /// (series, points) held: the buffer's size.
    pub fn size(&self) -> (usize, usize) {
        self.instances
            .values()
            .flat_map(|e| e.series.values())
            .fold((0, 0), |(s, p), q| (s + 1, p + q.len()))
    }
}

/// What the store needs from an Instance's status.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestStatus {
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub usage: Option<crate::model::instance::Usage>,
}

/// Where a workload's instances serve Prometheus text: (port, path).
pub fn scrape_endpoint(template: &PodTemplate) -> Option<(u16, String)> {
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    let path = annotations
        .get("prometheus.io/path")
        .cloned()
        .unwrap_or_else(|| "/metrics".into());
    if let Some(p) = annotations.get("prometheus.io/port") {
        return p.parse().ok().map(|p| (p, path));
    }
    let ports: Vec<_> = template
        .spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .or(ports.first())?;
    u16::try_from(port.container_port).ok().map(|p| (p, path))
}

/// The sum of the samples named exactly `name` (any labels) in Prometheus text format.
pub fn parse_prometheus(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = match rest.chars().next() {
            Some('{') => match rest.find('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            },
            Some(' ') | Some('\t') => rest,
            _ => continue,
        };
        let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if v.is_finite() {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Where to scrape an instance: directly when it runs on this node, else through its
/// node's API (`/scrape`), which reaches the instance's address on that node.
pub fn scrape_url(
    here: &str,
    node: &str,
    node_api: Option<&str>,
    (ns, name, ip): (&str, &str, &str),
    port: u16,
    path: &str,
) -> Option<String> {
    if node == here {
        return Some(format!("http://{ip}:{port}{path}"));
    }
    let api = node_api?;
    Some(format!(
        "{}/v1/namespaces/{ns}/instances/{name}/scrape?port={port}&path={path}",
        crate::cluster::pki::peer_api_url(api)
    ))
}

/// One scrape (blocking; run it on a blocking thread): the metric's value in
/// milli-units. `token` authenticates a scrape through another node's API.
pub fn scrape(url: &str, name: &str, timeout: Duration, token: &str) -> Result<i64, String> {
    let text = crate::cluster::pki::peer_agent(ureq::AgentBuilder::new())
        .get(url)
        .timeout(timeout)
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| format!("scraping {url}: {e}"))?
        .into_string()
        .map_err(|e| format!("reading {url}: {e}"))?;
    let v = parse_prometheus(&text, name).ok_or_else(|| format!("{url} has no metric {name}"))?;
    Ok((v * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::instance::Usage;

    const I: (&str, &str, &str) = ("default", "web-0", "uid-1");

    #[test]
    fn ring_buffer_means_dedupes_bounds_and_ages() {
        let mut s = MetricStore::default();
        for (at, v) in [(1000, 100), (2000, 200), (2000, 999), (3000, 600)] {
            s.record(I, MetricName::Cpu, at, v, 1000);
        }
        // The repeat at 2000 was dropped; a 2 s window holds 2000 and 3000.
        let got = s.sample(I, &MetricName::Cpu, 1500, 10_000, 3500).unwrap();
        assert_eq!(
            got,
            Sample {
                value_milli: 400,
                timestamp_ms: 3000,
                window_ms: 2000
            }
        );
        // Too old at 20 s with a 10 s maximum age.
        assert_eq!(s.sample(I, &MetricName::Cpu, 1500, 10_000, 20_000), None);
        // Another incarnation of the name has none of these.
        assert_eq!(
            s.sample(
                ("default", "web-0", "uid-2"),
                &MetricName::Cpu,
                1500,
                10_000,
                3500
            ),
            None
        );
        for at in 0..(CAPACITY as u64 + 50) {
            s.record(I, MetricName::Memory, 10_000 + at, 1, 1);
        }
        assert_eq!(s.size(), (2, 3 + CAPACITY));
        s.record(I, MetricName::Memory, 10_000 + RETENTION_MS * 2, 1, 1);
        assert_eq!(s.size(), (2, 3 + 1), "old points fall off");
        assert_eq!(
            s.points(I, &MetricName::Cpu),
            vec![(1000, 100), (2000, 200), (3000, 600)]
        );
        s.retain(|_, name, _| name != "web-0");
        assert_eq!(s.size(), (0, 0));
    }

    #[test]
    fn usage_reports_and_readiness_transitions() {
        let mut s = MetricStore::default();
        let status = |ready, ts: &str| IngestStatus {
            ready,
            usage: Some(Usage {
                cpu_millis: 250,
                memory_bytes: 1 << 20,
                timestamp: ts.into(),
                window_ms: 5000,
            }),
        };
        s.ingest(I, &status(true, "2025-01-01T00:00:10.500Z"), 1);
        assert_eq!(s.unready_since("default", "web-0"), None);
        s.ingest(I, &status(false, "2025-01-01T00:00:15.500Z"), 77);
        s.ingest(I, &status(false, "2025-01-01T00:00:15.500Z"), 99);
        assert_eq!(s.unready_since("default", "web-0"), Some(77));
        let at = crate::orchestrator::controllers::parse_ms("2025-01-01T00:00:15.500Z");
        let cpu = s.sample(I, &MetricName::Cpu, 1, 10_000, at).unwrap();
        assert_eq!((cpu.value_milli, cpu.window_ms), (250, 5000));
        let mem = s.sample(I, &MetricName::Memory, 1, 10_000, at).unwrap();
        assert_eq!(mem.value_milli, 1000 << 20);
        assert_eq!(s.size(), (2, 4));
    }

    #[test]
    fn prometheus_text_and_endpoints() {
        let text = "# TYPE http_requests_per_second gauge\nhttp_requests_per_second 12.5\nhttp_requests_per_second_max 99\nhttp_requests_total{code=\"200\"} 7\nhttp_requests_total{code=\"500\"} 3\n";
        assert_eq!(
            parse_prometheus(text, "http_requests_per_second"),
            Some(12.5)
        );
        assert_eq!(parse_prometheus(text, "http_requests_total"), Some(10.0));
        assert_eq!(parse_prometheus(text, "http_requests"), None);
        let template = |yaml: &str| -> PodTemplate { serde_norway::from_str(yaml).unwrap() };
        let t = template("metadata:\n  annotations: {prometheus.io/port: \"9100\", prometheus.io/path: /stats}\nspec:\n  containers: [{name: a, image: x, ports: [{containerPort: 80}]}]\n");
        assert_eq!(scrape_endpoint(&t), Some((9100, "/stats".into())));
        let t = template("spec:\n  containers: [{name: a, image: x, ports: [{containerPort: 80}, {name: metrics, containerPort: 9090}]}]\n");
        assert_eq!(scrape_endpoint(&t), Some((9090, "/metrics".into())));
        let t = template(
            "spec:\n  containers: [{name: a, image: x, ports: [{containerPort: 8080}]}]\n",
        );
        assert_eq!(scrape_endpoint(&t), Some((8080, "/metrics".into())));
        let t = template("spec:\n  containers: [{name: a, image: x}]\n");
        assert_eq!(scrape_endpoint(&t), None);
    }

    #[test]
    fn scrapes_a_real_workload_server() {
        // The toolbox's own http workload on a free port.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || crate::agent::workload::serve_on(listener));
        let url = format!("http://127.0.0.1:{port}/metrics");
        assert_eq!(
            scrape_url("n1", "n1", None, ("d", "w-0", "10.0.0.2"), 8080, "/metrics").unwrap(),
            "http://10.0.0.2:8080/metrics"
        );
        assert_eq!(
            scrape_url(
                "n1",
                "n2",
                Some("10.1.0.2:7070"),
                ("d", "w-0", "10.0.1.2"),
                8080,
                "/metrics"
            )
            .unwrap(),
            "http://10.1.0.2:7070/v1/namespaces/d/instances/w-0/scrape?port=8080&path=/metrics"
        );
        assert_eq!(
            scrape_url("n1", "gone", None, ("d", "w", "ip"), 1, "/m"),
            None
        );
        // Its first request is this scrape: one request so far, 1000 in milli-units.
        let total = scrape(&url, "http_requests_total", Duration::from_secs(2), "");
        assert_eq!(total, Ok(1000));
        let rate = scrape(&url, "http_requests_per_second", Duration::from_secs(2), "");
        assert!(rate.as_ref().is_ok_and(|r| *r >= 1000), "{rate:?}");
        let e = scrape(&url, "no_such_metric", Duration::from_secs(1), "").unwrap_err();
        assert!(e.contains("has no metric no_such_metric"), "{e}");
    }
}
