//! The console reads the real exporter's `/metrics`: a golden file of what
//! the console's parser (nom-openmetrics) finds in the exporter's output
//! after a PM-003 collision, and content negotiation as Prometheus' own
//! client does it (classic text unless OpenMetrics is asked for).

use warroom::console::metrics::{MetricSample, Scrape, parse_exposition};
use warroom::exporter::{Exporter, ExporterConfig};

/// An exporter that has read a PM-003 collision, a collision on a key with
/// `,` and `=` in it, and an application error, from fixed stream entries.
fn exporter_after_collisions() -> Exporter {
    // Never connected: entries are applied as the stream reader would.
    let exporter = Exporter::new(ExporterConfig::new("redis://127.0.0.1:1")).unwrap();
    let entries: [(&str, &[(&str, &str)]); 5] = [
        (
            "1795686900000-0",
            &[
                ("v", "1"),
                ("kind", "acquired"),
                ("mode", "legacy"),
                ("key", "lock:ord-9927431"),
                ("holder", "pod-7f"),
                ("ttl_ms", "60000"),
            ],
        ),
        (
            "1795686900500-0",
            &[
                ("v", "1"),
                ("kind", "acquired"),
                ("mode", "legacy"),
                ("key", "lock:ord-9927431"),
                ("holder", "pod-3c"),
                ("ttl_ms", "60000"),
            ],
        ),
        (
            "1795686901000-0",
            &[
                ("v", "1"),
                ("kind", "acquired"),
                ("mode", "legacy"),
                ("key", "lock:tenant=a,order=7"),
                ("holder", "pod-1"),
                ("ttl_ms", "60000"),
            ],
        ),
        (
            "1795686901500-0",
            &[
                ("v", "1"),
                ("kind", "acquired"),
                ("mode", "legacy"),
                ("key", "lock:tenant=a,order=7"),
                ("holder", "pod-2"),
                ("ttl_ms", "60000"),
            ],
        ),
        (
            "1795686902000-0",
            &[
                ("v", "1"),
                ("kind", "error"),
                ("mode", "app"),
                ("key", "E503"),
                ("holder", "order-service"),
            ],
        ),
    ];
    for (id, fields) in entries {
        exporter.apply_entry(id, fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    }
    exporter
}

fn sorted(samples: &[MetricSample]) -> Vec<String> {
    let mut lines: Vec<String> = samples
        .iter()
        .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
        .collect();
    lines.sort();
    lines
}

#[test]
fn the_exporters_real_output_parses_to_the_golden_samples() {
    let exporter = exporter_after_collisions();
    let text = exporter.render();
    let samples = parse_exposition(&text).unwrap();
    insta::assert_snapshot!("exporter_samples", sorted(&samples).join("\n"));
    let scrape = Scrape::from_samples(&samples).unwrap();
    let reading = scrape.reading(None);
    assert_eq!(reading.collisions_total, 2.0);
    assert_eq!(reading.holders_max, 2.0);
    assert!(
        matches!(
            reading.contended_key.as_deref(),
            Some("lock:ord-9927431" | "lock:tenant=a,order=7")
        ),
        "a key with , and = survives: {:?}",
        reading.contended_key
    );
    // The classic rendering holds the same samples.
    let classic = parse_exposition(&warroom::exporter::to_classic_text(&text)).unwrap();
    assert_eq!(sorted(&classic), sorted(&samples));
}

#[tokio::test]
async fn classic_text_unless_openmetrics_is_asked_for() {
    let exporter = exporter_after_collisions();
    let (addr, _server) = exporter.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = reqwest::Client::new();
    let get = |accept: Option<&'static str>| {
        let mut request = client.get(format!("http://{addr}/metrics"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        async move {
            let response = request.send().await.unwrap();
            let kind = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (kind, response.text().await.unwrap())
        }
    };
    let classic = "text/plain; version=0.0.4; charset=utf-8";
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    // What `curl | promtool check metrics` sends.
    let (kind, any) = get(Some("*/*")).await;
    assert_eq!(kind, classic);
    assert!(!any.contains("# EOF"));
    assert!(any.contains("# TYPE warroom_lock_collisions_total counter"));
    let (kind, _) = get(None).await;
    assert_eq!(kind, classic);
    let (kind, om) = get(Some(
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
    ))
    .await;
    assert_eq!(kind, openmetrics);
    assert!(om.ends_with("# EOF\n"));
    let (kind, _) = get(Some("application/openmetrics-text;q=0,*/*")).await;
    assert_eq!(kind, classic, "q=0 refuses OpenMetrics");
    assert_eq!(
        sorted(&parse_exposition(&any).unwrap()),
        sorted(&parse_exposition(&om).unwrap())
    );
}
