//! What a run measured, as a table for a person and as a plot.

use super::Report;

pub use jetsaga_runner::bench::Latency;

/// The report as a table a person reads.
pub fn print(report: &Report) {
    println!(
        "jetsaga bench: {} orders, {:?} x{}, {} store, {} saga{}",
        report.orders,
        report.layout,
        report.copies,
        report.store,
        report.saga,
        report.rate.map(|r| format!(", paced at {r}/s")).unwrap_or_default()
    );
    println!("  durability:        {}", report.durability);
    println!("  deadlines:         {}", if report.deadlines { "on (each step 30 s, the order 5 min)" } else { "off" });
    println!("  sagas/s:           {:.0}  ({:.2} s)", report.sagas_per_sec, report.saga_seconds);
    println!(
        "  raw JetStream:     {:.0} msg/s  ({:.1} messages/saga of {} B -> bound {:.0} sagas/s)",
        report.raw_msgs_per_sec, report.messages_per_saga, report.message_bytes, report.raw_bound_sagas_per_sec
    );
    println!("  ratio to raw:      {:.1}%", report.ratio_to_raw * 100.0);
    let l = &report.latency;
    let over = if report.http.is_some() { "  (the orders sent over NATS)" } else { "" };
    println!(
        "  latency (ms):      p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}{over}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
    println!(
        "  per step (ms):     {}",
        report.step_ms.iter().map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>().join(", ")
    );
    if !report.split.is_empty() {
        println!("  where a consumed message's time goes (ms, p50 / p99):");
    }
    if !report.split.is_empty() {
        println!(
            "    {:<13} {:>8} {:>6}  {:>13}  {:>13}  {:>13}  {:>13}",
            "function", "messages", "batch", "queue wait", "handling", "publish", "ack"
        );
    }
    let phase = |p: &super::Phase| format!("{:.2} / {:.1}", p.p50_ms, p.p99_ms);
    for s in &report.split {
        println!(
            "    {:<13} {:>8} {:>6.1}  {:>13}  {:>13}  {:>13}  {:>13}",
            s.function,
            s.messages,
            s.messages as f64 / s.batches.max(1) as f64,
            phase(&s.queue_wait),
            phase(&s.handling),
            phase(&s.publish),
            phase(&s.ack)
        );
    }
    println!(
        "  runner:            {:.1} CPU s ({:.2} ms per saga), peak RSS {:.0} MiB; nats-server {:.1} CPU s",
        report.runner_cpu_seconds,
        report.runner_cpu_ms_per_saga,
        report.runner_peak_rss_mib,
        report.nats_server_cpu_seconds
    );
    if let Some(http) = &report.http {
        let (n, h) = (&report.latency, &http.latency);
        println!(
            "  via HTTP (ms):     p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  ({} orders; gateway {:.1} CPU s)",
            h.p50_ms, h.p90_ms, h.p99_ms, h.max_ms, http.orders, http.gateway_cpu_seconds
        );
        println!(
            "  HTTP / NATS:       p50 x{:.2} ({:+.1} ms), p99 x{:.2} ({:+.1} ms)",
            h.p50_ms / n.p50_ms.max(1e-9),
            h.p50_ms - n.p50_ms,
            h.p99_ms / n.p99_ms.max(1e-9),
            h.p99_ms - n.p99_ms
        );
    }
    if let Some(cost) = &report.cost {
        println!("  on AWS (from the bootstraps' invocation lines):");
        for line in cost.lines() {
            println!("  {line}");
        }
        let calls: Vec<String> = cost
            .invocations
            .iter()
            .flat_map(|(function, requests)| {
                requests.iter().map(move |(request, n)| {
                    format!("{function} {request} {:.2}", *n as f64 / cost.sagas.max(1) as f64)
                })
            })
            .collect();
        println!("    invocations per saga: {}", calls.join(", "));
        let n = cost.sagas.max(1) as f64;
        let by_function: Vec<String> = cost
            .by_function
            .iter()
            .map(|(function, u)| {
                format!("{function} {:.1} / {:.1} / {:.1}", u.write_units / n, u.read_units / n, u.billed_ms / n)
            })
            .collect();
        println!("    per saga by function (write units / read units / billed ms): {}", by_function.join(", "));
    }
    println!("  targets (ratios to raw JetStream in this run):");
    for line in report.targets.lines(report.rate) {
        println!("    {line}");
    }
    println!("  outcomes:          {:?}; failures {:?}", report.outcomes, report.failure_reasons);
    if report.correct {
        println!(
            "  correctness:       ok (one end per order, nothing doubled, stock, credit and money conserved, \
             no dead letter, nothing unpublished)"
        );
    } else {
        println!("  correctness:       FAILED: {}", report.problems.join("; "));
    }
}

/// A latency histogram and a throughput time series, as one SVG.
pub fn svg(report: &Report) -> String {
    let (w, h, pad) = (720.0, 260.0, 40.0);
    let max_ms = report.samples.iter().cloned().fold(1.0f64, f64::max);
    let buckets = 40usize;
    let mut hist = vec![0usize; buckets];
    for s in &report.samples {
        hist[((s / max_ms) * (buckets as f64 - 1.0)) as usize] += 1;
    }
    let top = *hist.iter().max().unwrap_or(&1) as f64;
    let bar_w = (w - 2.0 * pad) / buckets as f64;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11">"#,
        2.0 * h + 20.0
    );
    out += &format!(
        r#"<text x="{pad}" y="16">end-to-end latency, {} orders (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)</text>"#,
        report.orders, report.latency.p50_ms, report.latency.p99_ms, report.latency.max_ms
    );
    for (i, count) in hist.iter().enumerate() {
        let bh = (*count as f64 / top.max(1.0)) * (h - 2.0 * pad);
        out += &format!(
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4878a8"/>"##,
            pad + i as f64 * bar_w,
            h - pad - bh,
            bar_w - 1.0,
            bh
        );
    }
    out += &format!(
        r#"<text x="{pad}" y="{}">0 ms</text><text x="{}" y="{}" text-anchor="end">{max_ms:.1} ms</text>"#,
        h - pad + 14.0,
        w - pad,
        h - pad + 14.0
    );
    let series = &report.throughput_series;
    let smax = *series.iter().max().unwrap_or(&1) as f64;
    let y0 = 2.0 * h - pad + 20.0;
    out += &format!(
        r#"<text x="{pad}" y="{}">sagas finished per second over time (peak {:.0}/s)</text>"#,
        h + 30.0,
        smax * 10.0
    );
    let points: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                pad + i as f64 * (w - 2.0 * pad) / series.len().max(1) as f64,
                y0 - (*v as f64 / smax.max(1.0)) * (h - 2.0 * pad)
            )
        })
        .collect();
    out += &format!(r##"<polyline fill="none" stroke="#c0504d" stroke-width="1.5" points="{}"/>"##, points.join(" "));
    out += "</svg>\n";
    out
}
