//! The report's chart, as hand-written SVG: throughput ratios to direct, and connect latency.

use std::fmt::Write as _;

use crate::bench::report::{Results, chart_groups};
use crate::bench::setup::Route;

const WIDTH: f64 = 980.0;
const HEIGHT: f64 = 400.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 330.0;

fn color(route: Route) -> &'static str {
    match route {
        Route::Direct => "#8c8c8c",
        Route::Pgbouncer => "#e0a030",
        Route::ProxyIam => "#1f5fa8",
        Route::ProxyPassword => "#74a9d8",
    }
}

/// The whole chart.
pub fn chart(results: &Results) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let mut legend_x = 60.0;
    for route in Route::ALL {
        let _ = writeln!(
            svg,
            "<rect x=\"{legend_x}\" y=\"14\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"25\">{}</text>",
            color(route),
            legend_x + 16.0,
            escape(route.label())
        );
        legend_x += 30.0 + 7.5 * route.label().len() as f64;
    }
    let mut throughput_rows: Vec<(String, String, String)> = results
        .settings
        .clients
        .iter()
        .map(|c| (format!("select-c{c}"), "tps".to_owned(), format!("select, {c} cl.")))
        .collect();
    throughput_rows.push(("copy-out".into(), "mib_per_s".into(), "COPY out".into()));
    throughput_rows.push(("copy-in".into(), "mib_per_s".into(), "COPY in".into()));
    let rows: Vec<(&str, &str, &str)> =
        throughput_rows.iter().map(|(w, m, l)| (w.as_str(), m.as_str(), l.as_str())).collect();
    let ratio_routes = [Route::Pgbouncer, Route::ProxyIam, Route::ProxyPassword];
    let groups = chart_groups(&results.samples, &rows, &ratio_routes, true);
    let throughput = Frame {
        x: 60.0,
        width: 600.0,
        title: "Throughput, ratio to direct (higher is better)",
        reference: Some(1.0),
        digits: 2,
    };
    panel(&mut svg, &throughput, &groups, &ratio_routes);

    let latency_rows = [("connect", "p50_ms", "connect p50"), ("connect", "p99_ms", "connect p99")];
    let groups = chart_groups(&results.samples, &latency_rows, &Route::ALL, false);
    let latency = Frame {
        x: 680.0,
        width: 280.0,
        title: "Connect latency, ms (lower is better)",
        reference: None,
        digits: 1,
    };
    panel(&mut svg, &latency, &groups, &Route::ALL);
    let _ = writeln!(svg, "</svg>");
    svg
}

/// Where a panel goes and how it is labelled: at `x`, `width` wide, with a dashed line at
/// `reference`, values shown with `digits` decimals.
struct Frame<'a> {
    x: f64,
    width: f64,
    title: &'a str,
    reference: Option<f64>,
    digits: usize,
}

/// One bar panel: groups of bars, one per route, with a y axis from zero.
fn panel(svg: &mut String, frame: &Frame<'_>, groups: &[(String, Vec<Option<f64>>)], routes: &[Route]) {
    let &Frame { x, width, title, reference, digits } = frame;
    let _ = writeln!(
        svg,
        "<text x=\"{x}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        TOP - 20.0,
        escape(title)
    );
    let max = groups
        .iter()
        .flat_map(|(_, values)| values.iter().flatten().copied())
        .chain(reference)
        .fold(0.0_f64, f64::max);
    let top_value = nice_ceiling(max * 1.1);
    let y_of = |v: f64| BOTTOM - (v / top_value) * (BOTTOM - TOP);
    let _ = writeln!(
        svg,
        "<line x1=\"{x}\" y1=\"{BOTTOM}\" x2=\"{}\" y2=\"{BOTTOM}\" stroke=\"#333\"/>",
        x + width
    );
    let _ = writeln!(svg, "<line x1=\"{x}\" y1=\"{TOP}\" x2=\"{x}\" y2=\"{BOTTOM}\" stroke=\"#333\"/>");
    for tick in 0..=4 {
        let value = top_value * f64::from(tick) / 4.0;
        let y = y_of(value);
        let _ = writeln!(
            svg,
            "<line x1=\"{x}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{value:.digits$}</text>",
            x + width,
            x - 6.0,
            y + 4.0
        );
    }
    if let Some(reference) = reference {
        let y = y_of(reference);
        let _ = writeln!(
            svg,
            "<line x1=\"{x}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#333\" stroke-dasharray=\"5,4\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#333\">direct</text>",
            x + width,
            x + width - 4.0,
            y - 5.0
        );
    }
    if groups.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" fill=\"#555\">not measured</text>",
            x + 20.0,
            (TOP + BOTTOM) / 2.0
        );
        return;
    }
    let group_width = width / groups.len() as f64;
    let bar_width = group_width * 0.8 / routes.len() as f64;
    for (i, (label, values)) in groups.iter().enumerate() {
        let group_x = x + group_width * i as f64 + group_width * 0.1;
        for (j, (route, value)) in routes.iter().zip(values).enumerate() {
            let Some(value) = value else { continue };
            let bar_x = group_x + bar_width * j as f64;
            let y = y_of(*value);
            let _ = writeln!(
                svg,
                "<rect x=\"{bar_x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{}: {value:.3}</title></rect>",
                bar_width - 2.0,
                BOTTOM - y,
                color(*route),
                escape(route.label())
            );
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{value:.digits$}</text>",
                bar_x + bar_width / 2.0 - 1.0,
                y - 3.0
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x + group_width * (i as f64 + 0.5),
            BOTTOM + 18.0,
            escape(label)
        );
    }
}

/// 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * power).find(|c| *c >= value).unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0.93), 1.0);
        assert_eq!(nice_ceiling(1.1), 2.0);
        assert_eq!(nice_ceiling(23.0), 25.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
