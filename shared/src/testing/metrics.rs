//! Reading a service's `/metrics`: the series of a Prometheus text exposition, one value by
//! name and labels, and a plain HTTP GET.

/// One series of a Prometheus text exposition: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric name (with `_bucket`, `_count`, `_sum` for a histogram's parts).
    pub name: String,
    /// The labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// Parses the series of a Prometheus text exposition (comments skipped). Panics on a line
/// that is not a series: the text under test must be well formed.
pub fn parse_metrics(text: &str) -> Vec<Series> {
    let mut series = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => panic!("not a series: {line}"),
        };
        let mut labels = Vec::new();
        let mut rest = rest;
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let end = loop {
                let Some((i, c)) = chars.next() else {
                    panic!("unterminated labels: {line}")
                };
                match c {
                    '}' => break i,
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next() {
                                Some((_, '"')) => break,
                                Some((_, '\\')) => match chars.next() {
                                    Some((_, 'n')) => value.push('\n'),
                                    Some((_, c)) => value.push(c),
                                    None => panic!("bad escape: {line}"),
                                },
                                Some((_, c)) => value.push(c),
                                None => panic!("unterminated value: {line}"),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    c => key.push(c),
                }
            };
            rest = &inner[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no value: {line}"));
        series.push(Series {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    series
}

/// The sum of the series `name` whose labels include every pair of `labels` (0 when none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .fold(0.0, |sum, v| sum + v)
}

/// `GET /metrics` of the service whose HTTP port is `addr`.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let url = format!("http://{addr}{}", crate::metrics::METRICS_PATH);
    http_get(&url)
        .await
        .unwrap_or_else(|e| panic!("scrape {url}: {e}"))
}

/// A plain HTTP/1.1 GET, the body as text (the `/metrics` scrape, the Prometheus API).
pub async fn http_get(url: &str) -> anyhow::Result<String> {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse()?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    anyhow::ensure!(status.is_success(), "{status}: {text}");
    Ok(text)
}
